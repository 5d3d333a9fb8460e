// Two subscriptions on the storage account's system topic, both webhooks of the function app:
// - ingest-metadata: BlobCreated of <images container>/metadata*.json to the blob extension
//   webhook (Flex Consumption supports only the Event Grid source of the blob trigger);
// - metadata-events: BlobCreated and BlobDeleted of any container's *.json to the Event Grid
//   trigger `metadata_events`, so deleting a metadata file removes what it contributed.
// Event Grid validates a webhook when its subscription is created, so deploy this after the
// code: the handshakes and the blobs_extension / eventgrid_extension system keys exist only
// once the triggers are loaded.
param systemTopicName string
param functionAppName string
param storageAccountName string
param imagesContainerName string
param deadLetterContainerName string
@description('The blob-triggered function (api/ingestion.py).')
param functionName string = 'ingest_metadata_trigger'
param subscriptionName string = 'ingest-metadata'
@description('The Event Grid triggered function for metadata files (api/ingestion.py).')
param metadataFunctionName string = 'metadata_events'
param metadataSubscriptionName string = 'metadata-events'

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

// Shared by both subscriptions: retry for 24 hours, then dead-letter with the topic's identity.
var retryPolicy = {
  maxDeliveryAttempts: 30
  eventTimeToLiveInMinutes: 1440
}
var deadLetter = {
  identity: { type: 'SystemAssigned' }
  deadLetterDestination: {
    endpointType: 'StorageBlob'
    properties: {
      resourceId: storage.id
      blobContainerName: deadLetterContainerName
    }
  }
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
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: deadLetter
  }
}

resource metadataSubscription 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: topic
  name: metadataSubscriptionName
  properties: {
    destination: {
      endpointType: 'WebHook'
      properties: {
        endpointUrl: 'https://${functionApp.properties.defaultHostName}/runtime/webhooks/eventgrid?functionName=${metadataFunctionName}&code=${functionHost.listKeys().systemKeys.eventgrid_extension}'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: ['Microsoft.Storage.BlobCreated', 'Microsoft.Storage.BlobDeleted']
      // Any container; `.json` in any case (Metadata.JSON too), so the function can tell a
      // person why a near-miss name was not ingested. Nested names (a/b.json) also arrive: the
      // function ignores them.
      subjectBeginsWith: '/blobServices/default/containers/'
      subjectEndsWith: '.json'
      isSubjectCaseSensitive: false
    }
    retryPolicy: retryPolicy
    deadLetterWithResourceIdentity: deadLetter
  }
}

output name string = subscription.name
