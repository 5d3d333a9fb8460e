"""The function app: builds the DFApp, registers each area's blueprint, and (offline) starts
loading the embedded indexes and models in the background (imagerag/warm_up.py).

HTTP streams are on: importing the FastAPI extension makes every HTTP function of the app
take FastAPI's ``Request`` and return its ``Response`` (chat streams its answer). The host
needs PYTHON_ENABLE_INIT_INDEXING=1 for it (set in infra/ and local.settings.example.json).
"""

import azure.durable_functions as df
import azure.functions as func
import azurefunctions.extensions.http.fastapi  # noqa: F401 (HTTP streams for the whole app)

from activities.ingest import bp as ingest_activities
from api.chat import bp as chat_api
from api.datasources import bp as datasources_api
from api.ingestion import bp as ingestion_api
from api.playground import bp as playground_api
from imagerag import warm_up
from orchestrations.ingest import bp as ingest_orchestrations

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)

app.register_functions(ingestion_api)
app.register_functions(chat_api)
app.register_functions(datasources_api)
app.register_functions(playground_api)
app.register_functions(ingest_orchestrations)
app.register_functions(ingest_activities)

warm_up.start()
