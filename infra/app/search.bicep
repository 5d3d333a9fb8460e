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
    // The semantic ranker serves the chat's semantic query types; its free plan (1,000
    // queries a month) needs Basic or higher, so the Free tier goes without it.
    semanticSearch: sku == 'free' ? 'disabled' : 'free'
  }
}

output id string = search.id
output name string = search.name
output endpoint string = 'https://${search.name}.search.windows.net'
