# azd preup and postdown hook (Windows): see reset-event-subscription.sh.
azd env set IMAGERAG_EVENT_SUBSCRIPTION false
exit $LASTEXITCODE
