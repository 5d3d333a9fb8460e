// imagerag on Azure: a Flex Consumption function app that ingests images dropped into a Blob
// container and answers chat requests grounded on them. Every service is reached with the app's
// user-assigned managed identity; keys are off unless allowKeys is set.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; seeds the resource names and the azd-env-name tag.')
param environmentName string

// Regions are checked when the parameters are read, not half-way through a deployment: azd offers
// only the allowed values in its location prompt and ARM rejects anything else up front.

@minLength(1)
@description('Region of the resource group, the function app, storage, search and monitoring: one with Flex Consumption.')
// Regions with Flex Consumption, as in Microsoft's Flex Consumption azd templates
// (Azure-Samples/remote-mcp-functions-python, infra/main.bicep); the live list:
// az functionapp list-flexconsumption-locations.
@allowed([
  'australiaeast'
  'australiasoutheast'
  'brazilsouth'
  'canadacentral'
  'centralindia'
  'centralus'
  'eastasia'
  'eastus'
  'eastus2'
  'francecentral'
  'germanywestcentral'
  'italynorth'
  'japaneast'
  'koreacentral'
  'northcentralus'
  'northeurope'
  'norwayeast'
  'southafricanorth'
  'southcentralus'
  'southeastasia'
  'southindia'
  'spaincentral'
  'swedencentral'
  'uaenorth'
  'uksouth'
  'ukwest'
  'westcentralus'
  'westeurope'
  'westus'
  'westus2'
  'westus3'
])
@metadata({ azd: { type: 'location' } })
param location string

@description('Region of the AI Vision account: one that offers multimodal embeddings (retrieval:vectorizeImage).')
// The "Multimodal embeddings" column of the Image Analysis region table:
// https://learn.microsoft.com/azure/ai-services/computer-vision/overview-image-analysis#region-availability
@allowed([
  'australiaeast'
  'eastus'
  'francecentral'
  'japaneast'
  'koreacentral'
  'northeurope'
  'southeastasia'
  'swedencentral'
  'switzerlandnorth'
  'westeurope'
  'westus'
  'westus2'
])
@metadata({ azd: { type: 'location' } })
param visionLocation string = 'eastus'

@minLength(1)
@description('Region of the Azure OpenAI account. azd offers only regions where the subscription has quota for the chat deployment below.')
// usageName is OpenAI.<chatDeploymentSku>.<chatModelName>,<chatDeploymentCapacity> of the defaults
// (metadata cannot read parameters; tests/test_infra.py keeps them in step).
@metadata({
  azd: {
    type: 'location'
    usageName: [
      'OpenAI.GlobalStandard.gpt-5.6-terra,30'
    ]
  }
})
param openAiLocation string

@description('Object id of the principal running the deployment; gets data-plane roles to upload images and query the index. Empty: none.')
param principalId string = ''

@description('Type of principalId: User for a person, ServicePrincipal for a CI identity (azd sets AZURE_PRINCIPAL_TYPE).')
@allowed(['User', 'ServicePrincipal', 'Group'])
param principalType string = 'User'

@description('Allow key/shared-key authentication on Storage, Search and the AI accounts. Off: Entra ID only.')
param allowKeys bool = false

@description('Name of the resource group; empty: rg-<environmentName>.')
param resourceGroupName string = ''

@description('Container watched for metadata*.json files and holding the images.')
param imagesContainerName string = 'images'

@description('Container for the app\'s own files (ingestion reports).')
param workContainerName string = 'imagerag-work'

@description('Index the chat endpoint searches when a request names none; empty: <imagesContainerName>-v.')
param chatDefaultIndex string = ''

@description('Comma-separated host names the chat endpoint may fetch prompt images from (empty: data URLs only).')
param chatImageUrlAllowlist string = ''

@description('AI Vision multimodal embeddings model version; never mix versions in one index.')
param visionModelVersion string = '2023-04-15'

@description('AI Search pricing tier.')
@allowed(['free', 'basic', 'standard', 'standard2', 'standard3'])
param searchSku string = 'basic'

// The chat model: generally available, image input, chat completions, the longest runway on
// Azure's model retirement schedule (gpt-5.6-terra 2026-07-09: retirement 2028-01-11). It is a
// reasoning model: no temperature/top_p, max_completion_tokens instead of max_tokens (the answerer
// sends neither). The deployment follows new versions when this one expires
// (versionUpgradeOption in app/openai.bicep), so it never stops at retirement.
@description('Vision-capable chat model deployed on Azure OpenAI (keep the usageName of openAiLocation in step).')
param chatModelName string = 'gpt-5.6-terra'

@description('Version of the chat model.')
param chatModelVersion string = '2026-07-09'

@description('Name of the chat deployment (AZURE_OPENAI_CHAT_DEPLOYMENT).')
param chatDeploymentName string = 'gpt-5.6-terra'

@description('Deployment type of the chat model.')
@allowed(['GlobalStandard', 'DataZoneStandard', 'Standard'])
param chatDeploymentSku string = 'GlobalStandard'

@description('Chat deployment capacity in thousands of tokens per minute.')
@minValue(1)
param chatDeploymentCapacity int = 30

@description('Azure OpenAI data-plane API version the app calls (AZURE_OPENAI_API_VERSION): the newest dated version, which serves the GPT-5 series with image input on /openai/deployments/{name}/chat/completions.')
param openAiApiVersion string = '2025-04-01-preview'

@description('Upper bound of Flex Consumption instances.')
@minValue(40)
@maxValue(1000)
param maximumInstanceCount int = 100

@description('Memory per Flex Consumption instance, MB (no local model runs in Azure, so 2048 is enough).')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Origins allowed to call the HTTP API from a browser, comma-separated (azd: IMAGERAG_CORS_ORIGINS). The playground the app serves at /api/playground/ is same-origin and needs none; list the origin of a copy of web/ hosted elsewhere. The portal is kept for its Test/Run pane.')
param corsAllowedOrigins string = 'https://portal.azure.com'

// 'https://a.example, https://b.example' -> ['https://a.example', 'https://b.example']; '' -> []
var corsOrigins = empty(trim(corsAllowedOrigins)) ? [] : split(replace(corsAllowedOrigins, ' ', ''), ',')

@description('Create the Event Grid subscriptions (blob trigger, metadata_events). Their webhooks are validated on creation, so the code must be deployed first: true only on a second run (azd: the postdeploy hook, infra/hooks/).')
param eventSubscriptionEnabled bool = false

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = { 'azd-env-name': environmentName }
var functionAppName = 'func-${resourceToken}'
// The Flex Consumption deployment package lives in its own container of the app's storage.
var deploymentContainerName = 'app-package-${resourceToken}'
var deadLetterContainerName = 'eventgrid-deadletter'
var systemTopicName = 'evgt-${resourceToken}'
var defaultIndex = empty(chatDefaultIndex) ? '${imagesContainerName}-v' : chatDefaultIndex

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: empty(resourceGroupName) ? 'rg-${environmentName}' : resourceGroupName
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    allowSharedKeyAccess: allowKeys
    containerNames: [
      deploymentContainerName
      imagesContainerName
      workContainerName
      deadLetterContainerName
    ]
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module search 'app/search.bicep' = {
  name: 'search'
  scope: rg
  params: {
    name: 'srch-${resourceToken}'
    location: location
    tags: tags
    sku: searchSku
    allowKeys: allowKeys
  }
}

module vision 'app/vision.bicep' = {
  name: 'vision'
  scope: rg
  params: {
    name: 'cv-${resourceToken}'
    location: visionLocation
    tags: tags
    allowKeys: allowKeys
  }
}

module openAi 'app/openai.bicep' = {
  name: 'openai'
  scope: rg
  params: {
    name: 'oai-${resourceToken}'
    location: openAiLocation
    tags: tags
    allowKeys: allowKeys
    deploymentName: chatDeploymentName
    modelName: chatModelName
    modelVersion: chatModelVersion
    deploymentSku: chatDeploymentSku
    capacity: chatDeploymentCapacity
  }
}

module api 'app/api.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    identityId: identity.outputs.id
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    corsAllowedOrigins: corsOrigins
    // The settings imagerag/config.py reads; the host's own settings are added in api.bicep.
    appSettings: {
      AzureWebJobsStorage__blobServiceUri: storage.outputs.blobEndpoint
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identity.outputs.clientId
      IMAGES_CONTAINER: imagesContainerName
      WORK_CONTAINER: workContainerName
      // Flex Consumption runs only the Event Grid source of the blob trigger.
      INGEST_TRIGGER_SOURCE: 'EventGrid'
      AZURE_CLIENT_ID: identity.outputs.clientId
      AZURE_VISION_ENDPOINT: vision.outputs.endpoint
      AZURE_VISION_MODEL_VERSION: visionModelVersion
      AZURE_SEARCH_ENDPOINT: search.outputs.endpoint
      AZURE_OPENAI_ENDPOINT: openAi.outputs.endpoint
      AZURE_OPENAI_CHAT_DEPLOYMENT: openAi.outputs.deploymentName
      AZURE_OPENAI_API_VERSION: openAiApiVersion
      CHAT_DEFAULT_INDEX: defaultIndex
      CHAT_IMAGE_URL_ALLOWLIST: chatImageUrlAllowlist
    }
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    appPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
    userPrincipalType: principalType
    storageAccountName: storage.outputs.name
    searchServiceName: search.outputs.name
    visionAccountName: vision.outputs.name
    openAiAccountName: openAi.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
  }
}

module eventTopic 'app/eventgrid-topic.bicep' = {
  name: 'eventgrid-topic'
  scope: rg
  params: {
    name: systemTopicName
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    deadLetterContainerName: deadLetterContainerName
  }
}

module eventSubscription 'app/eventgrid-subscription.bicep' = if (eventSubscriptionEnabled) {
  name: 'eventgrid-subscription'
  scope: rg
  params: {
    systemTopicName: eventTopic.outputs.name
    functionAppName: api.outputs.name
    storageAccountName: storage.outputs.name
    imagesContainerName: imagesContainerName
    deadLetterContainerName: deadLetterContainerName
  }
  dependsOn: [rbac]
}

// Endpoints and names only: no keys or connection strings leave the deployment.
output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output AZURE_FUNCTION_APP_URL string = api.outputs.url
output AZURE_CLIENT_ID string = identity.outputs.clientId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_STORAGE_BLOB_ENDPOINT string = storage.outputs.blobEndpoint
output IMAGES_CONTAINER string = imagesContainerName
output WORK_CONTAINER string = workContainerName
output DEAD_LETTER_CONTAINER string = deadLetterContainerName
output AZURE_VISION_ENDPOINT string = vision.outputs.endpoint
output AZURE_SEARCH_ENDPOINT string = search.outputs.endpoint
output AZURE_OPENAI_ENDPOINT string = openAi.outputs.endpoint
output AZURE_OPENAI_CHAT_DEPLOYMENT string = openAi.outputs.deploymentName
output AZURE_OPENAI_API_VERSION string = openAiApiVersion
output CHAT_DEFAULT_INDEX string = defaultIndex
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output EVENTGRID_SYSTEM_TOPIC_NAME string = eventTopic.outputs.name
