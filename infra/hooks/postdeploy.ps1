# azd postdeploy hook (Windows): see postdeploy.sh. The flag is true only for this provision.
azd env set IMAGERAG_EVENT_SUBSCRIPTION true
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
azd provision --no-prompt
$status = $LASTEXITCODE
azd env set IMAGERAG_EVENT_SUBSCRIPTION false
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
exit $status
