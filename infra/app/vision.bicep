// Azure AI Vision for multimodal embeddings (retrieval:vectorizeImage / vectorizeText).
// A custom subdomain is required for Entra ID tokens; keys are disabled unless allowed.
param name string
@description('A region that offers multimodal embeddings (checked in main.bicep).')
param location string
param tags object = {}
param allowKeys bool = false

resource vision 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'ComputerVision'
  sku: { name: 'S1' }
  properties: {
    customSubDomainName: name
    disableLocalAuth: !allowKeys
    publicNetworkAccess: 'Enabled'
  }
}

output id string = vision.id
output name string = vision.name
output endpoint string = vision.properties.endpoint
