// Delivers BlobCreated events of <images container>/metadata*.json to the blob extension webhook
// of the function app (Flex Consumption supports only the Event Grid source of the blob trigger).
// Event Grid validates the webhook when the subscription is created, so deploy this after the
// code: the blobs_extension system key and the handshake exist only once the trigger is loaded.
param systemTopicName string
param functionAppName string
param storageAccountName string
param imagesContainerName string
param deadLetterContainerName string
@description('The blob-triggered function (api/ingestion.py).')
param functionName string = 'ingest_metadata_trigger'
param subscriptionName string = 'ingest-metadata'

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

resource functionHost 'Microsoft.Web/sites/host@2024-04-01' existing = {
  parent: functionApp
  name: 'default'
}

resource subscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: subscriptionName
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}&code=${functionHost.listKeys().systemKeys.blobs_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated']
      // Same shape as the trigger path %IMAGES_CONTAINER%/metadata{name}.json; the code checks
      // the name again (metadata*.json at the top of the container only).
      subjectBeginsWith: '/blobServices/default/containers/${imagesContainerName}/blobs/metadata'
      subjectEndsWith: '.json'
      isSubjectCaseSensitive: true
    }
    retryPolicy: {
      maxDeliveryAttempts: 30
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: { type: 'SystemAssigned' }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storage.id
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}

output name string = subscription.name
