// Role assignments. The app identity gets exactly what the code path needs; the optional user
// (the person running azd) gets data-plane roles to upload images and try the services locally.
// Role definition ids are the built-in ones (az role definition list --name '<role>').
param appPrincipalId string
param userPrincipalId string = ''
@allowed(['User', 'ServicePrincipal', 'Group'])
param userPrincipalType string = 'User'
param storageAccountName string
param searchServiceName string
param visionAccountName string
param openAiAccountName string
param applicationInsightsName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource search 'Microsoft.Search/searchServices@2023-11-01' existing = {
  name: searchServiceName
}

resource vision 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: visionAccountName
}

resource openAi 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: openAiAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

var appStorageRoles = [
  // Storage Blob Data Owner: the host's identity-based AzureWebJobsStorage and blob trigger
  // require Owner; it also covers the deployment package, images, reports and
  // generateUserDelegationKey for the user-delegation SAS citation URLs.
  'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // Storage Queue Data Contributor: Durable Functions control and work-item queues.
  '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // Storage Table Data Contributor: Durable Functions history and instances tables.
  '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
]

var appSearchRoles = [
  // Search Index Data Contributor: upload, delete and query documents.
  '8ebe5a00-799e-43f5-93ac-243d3dce84a7'
  // Search Service Contributor: create the <container>-v index on first ingestion.
  '7ca78c08-252a-4471-8644-bb5ff32d4ba0'
]

resource appStorageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in appStorageRoles: {
    name: guid(storage.id, appPrincipalId, roleId)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

resource appSearchAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in appSearchRoles: {
    name: guid(search.id, appPrincipalId, roleId)
    scope: search
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: appPrincipalId
      principalType: 'ServicePrincipal'
    }
  }
]

// Cognitive Services User: call the Vision multimodal embeddings API.
resource appVisionAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vision.id, appPrincipalId, 'a97b65f3-24c7-4388-baec-2e87135dc908')
  scope: vision
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      'a97b65f3-24c7-4388-baec-2e87135dc908'
    )
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Cognitive Services OpenAI User: chat completions on the deployment, nothing more.
resource appOpenAiAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(openAi.id, appPrincipalId, '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd')
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
    )
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// Monitoring Metrics Publisher: send telemetry to Application Insights with Entra ID.
resource appTelemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, appPrincipalId, '3913510d-42f4-4e42-8a64-420c390055eb')
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      '3913510d-42f4-4e42-8a64-420c390055eb'
    )
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
  }
}

var userStorageRoles = [
  // Storage Blob Data Contributor: upload images and metadata files, read reports.
  'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
]

var userSearchRoles = [
  // Search Index Data Contributor and Search Service Contributor: inspect and rebuild indexes.
  '8ebe5a00-799e-43f5-93ac-243d3dce84a7'
  '7ca78c08-252a-4471-8644-bb5ff32d4ba0'
]

resource userStorageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in userStorageRoles: if (!empty(userPrincipalId)) {
    name: guid(storage.id, userPrincipalId, roleId)
    scope: storage
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: userPrincipalId
      principalType: userPrincipalType
    }
  }
]

resource userSearchAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for roleId in userSearchRoles: if (!empty(userPrincipalId)) {
    name: guid(search.id, userPrincipalId, roleId)
    scope: search
    properties: {
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
      principalId: userPrincipalId
      principalType: userPrincipalType
    }
  }
]

// Cognitive Services User and OpenAI User: run the app locally against the Azure services.
resource userVisionAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(vision.id, userPrincipalId, 'a97b65f3-24c7-4388-baec-2e87135dc908')
  scope: vision
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      'a97b65f3-24c7-4388-baec-2e87135dc908'
    )
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}

resource userOpenAiAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(openAi.id, userPrincipalId, '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd')
  scope: openAi
  properties: {
    roleDefinitionId: subscriptionResourceId(
      'Microsoft.Authorization/roleDefinitions',
      '5e0bd9bd-7b93-4f28-af87-19fc36ad61bd'
    )
    principalId: userPrincipalId
    principalType: userPrincipalType
  }
}
