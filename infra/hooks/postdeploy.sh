#!/bin/sh
# azd postdeploy hook: create the blob trigger's Event Grid subscription now that the code is
# deployed (Event Grid validates the webhook when the subscription is created, and the handshake
# and the blobs_extension key exist only once the trigger runs). Same Bicep, run again with the
# subscription enabled. The flag is true only for this provision and false again afterwards,
# whether it succeeded or not, so the azd environment holds nothing that changes the next
# `azd up` (after `azd down` its first provision must create no subscription).
azd env set IMAGERAG_EVENT_SUBSCRIPTION true || exit $?
azd provision --no-prompt
status=$?
azd env set IMAGERAG_EVENT_SUBSCRIPTION false || exit $?
exit "$status"
