// Azure AI Search holding the <container>-v image indexes. The app creates the indexes itself
// (Search Service Contributor) and writes documents (Search Index Data Contributor).
param name string
param location string
param tags object = {}
@allowed(['free', 'basic', 'standard', 'standard2', 'standard3'])
param sku string = 'basic'
param allowKeys bool = false

resource search 'Microsoft.Search/searchServices@2023-11-01' = {
  name: name
  location: location
  tags: tags
  sku: { name: sku }
  properties: {
    replicaCount: 1
    partitionCount: 1
    hostingMode: 'default'
    publicNetworkAccess: 'enabled'
    // Entra ID only by default; with keys allowed, both keys and Entra ID are accepted.
    disableLocalAuth: !allowKeys
    authOptions: allowKeys ? { aadOrApiKey: { aadAuthFailureMode: 'http401WithBearerChallenge' } } : null
    // Retrieval is vector + full text with RRF; the semantic ranker is not used.
    semanticSearch: 'disabled'
  }
}

output id string = search.id
output name string = search.name
output endpoint string = 'https://${search.name}.search.windows.net'
