// The app's one identity: the host (AzureWebJobsStorage__*, deployment package) and the code
// (AZURE_CLIENT_ID) both use it, so every role is granted once, to this principal.
param name string
param location string
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output clientId string = identity.properties.clientId
output principalId string = identity.properties.principalId
