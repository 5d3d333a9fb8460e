// Azure OpenAI with one vision-capable chat deployment (model and version: parameters of main.bicep).
// OnceCurrentVersionExpired: when the deployed version retires, Azure moves the deployment to the
// model's current default version instead of failing every request (NoAutoUpgrade would).
param name string
param location string
param tags object = {}
param allowKeys bool = false
param deploymentName string
param modelName string
param modelVersion string
@allowed(['GlobalStandard', 'DataZoneStandard', 'Standard'])
param deploymentSku string = 'GlobalStandard'
@description('Thousands of tokens per minute.')
param capacity int

resource openAi 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: { name: 'S0' }
  properties: {
    customSubDomainName: name
    disableLocalAuth: !allowKeys
    publicNetworkAccess: 'Enabled'
  }
}

resource chat 'Microsoft.CognitiveServices/accounts/deployments@2024-10-01' = {
  parent: openAi
  name: deploymentName
  sku: {
    name: deploymentSku
    capacity: capacity
  }
  properties: {
    model: {
      format: 'OpenAI'
      name: modelName
      version: modelVersion
    }
    versionUpgradeOption: 'OnceCurrentVersionExpired'
  }
}

output id string = openAi.id
output name string = openAi.name
output endpoint string = openAi.properties.endpoint
output deploymentName string = chat.name
