// Event Grid system topic for the storage account's blob events. Its system identity writes
// undeliverable events to the dead-letter container (shared keys are off on the account).
param name string
param location string
param tags object = {}
param storageAccountName string
param deadLetterContainerName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  identity: { type: 'SystemAssigned' }
  properties: {
    source: storage.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

// In a module so the role assignment's name can include the topic's principal id (a resource name
// must be known when the deployment starts; a module parameter is, the identity of a resource
// created in the same file is not). A recreated topic gets a new identity and so a new assignment
// instead of RoleAssignmentUpdateNotPermitted.
module deadLetterAccess 'deadletter-access.bicep' = {
  name: 'eventgrid-deadletter-access'
  params: {
    principalId: topic.identity.principalId
    storageAccountName: storageAccountName
    containerName: deadLetterContainerName
  }
}

output name string = topic.name
output principalId string = topic.identity.principalId
