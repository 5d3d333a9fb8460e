#!/bin/sh
# azd preup and postdown hook: the first provision of `azd up` runs before any code is deployed,
# so it must not create the Event Grid subscription. Clears a flag that an interrupted postdeploy
# hook, or an older version of this template (which kept it true), may have left behind.
azd env set IMAGERAG_EVENT_SUBSCRIPTION false
