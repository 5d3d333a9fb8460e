"""The Azure deployment (infra/, azure.yaml, host.json) checked without Azure.

Every .bicep file is parsed with a real Bicep grammar (tree-sitter-bicep) and cross-checked the
way the compiler would (module files, params, outputs, symbols); the app settings Bicep writes are
compared with the settings the code reads; the role assignments with the roles the code path
needs; the Event Grid subscription with the blob trigger; and azure-functions-doctor runs on the
project.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path

import pytest
import tree_sitter_bicep
from tree_sitter import Language, Node, Parser

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
MAIN = INFRA / "main.bicep"
API = INFRA / "app" / "api.bicep"
RBAC = INFRA / "app" / "rbac.bicep"
EVENT_SUBSCRIPTION = INFRA / "app" / "eventgrid-subscription.bicep"
BICEP_FILES = sorted(INFRA.rglob("*.bicep"))

# Settings the code reads that Bicep deliberately does not set, each with its reason.
NOT_SET_IN_AZURE = {
    "AzureWebJobsStorage": "connection string with a key; identity-based AzureWebJobsStorage__* "
    "settings are used instead",
    "AzureWebJobsStorage__accountName": "fallback for hand-made settings; "
    "AzureWebJobsStorage__blobServiceUri is set",
    "AZURE_VISION_KEY": "key; the managed identity is used (Cognitive Services User)",
    "AZURE_SEARCH_KEY": "key; the managed identity is used (Search roles)",
    "AZURE_OPENAI_KEY": "key; the managed identity is used (Cognitive Services OpenAI User)",
    "OPENAI_BASE_URL": "OpenAI-compatible server: local alternative to Azure OpenAI",
    "OPENAI_MODEL": "OpenAI-compatible server: local alternative to Azure OpenAI",
    "OPENAI_API_KEY": "OpenAI-compatible server: local alternative to Azure OpenAI",
    "LOCAL_DATA_DIR": "embedded local index; Azure AI Search is used in Azure",
    "LOCAL_INDEX_GRAPH_FROM_ROWS": "embedded local index; Azure AI Search is used in Azure",
    "INGEST_PARTITION_SIZE": "the code default (100) is the deployed value",
    "IMAGE_LINK_KEY": "secret; only used when storage is a connection string (with the managed "
    "identity, citations are user-delegation SAS URLs)",
}

# Settings Bicep writes that the code does not read: the Functions host and worker read them.
HOST_ONLY_SETTINGS = {
    "AzureWebJobsStorage__queueServiceUri": "Durable Functions queues (identity-based)",
    "AzureWebJobsStorage__tableServiceUri": "Durable Functions tables (identity-based)",
    "APPLICATIONINSIGHTS_CONNECTION_STRING": "where the host sends telemetry",
    "APPLICATIONINSIGHTS_AUTHENTICATION_STRING": "telemetry with Entra ID (local auth is off)",
    "PYTHON_THREADPOOL_THREAD_COUNT": "worker threads for sync activities and orchestrators",
    "PYTHON_ENABLE_INIT_INDEXING": "HTTP streams (FastAPI extension) before Python 3.13",
}

# Flex Consumption rejects or ignores these; keys must never be settings.
FORBIDDEN_SETTINGS = {
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_EXTENSION_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "AzureWebJobsStorage",
    "AZURE_VISION_KEY",
    "AZURE_SEARCH_KEY",
    "AZURE_OPENAI_KEY",
    "OPENAI_API_KEY",
}

# Built-in role definition ids (az role definition list --name '<role>' --query [].name).
ROLE_IDS = {
    "Storage Blob Data Owner": "b7e6dc6d-f1e8-4753-8033-0f276bb0955b",
    "Storage Blob Data Contributor": "ba92f5b4-2d11-453d-a403-e96b0029c9fe",
    "Storage Queue Data Contributor": "974c5e8b-45b9-4653-ba55-5f855dd0fb88",
    "Storage Table Data Contributor": "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3",
    "Search Index Data Contributor": "8ebe5a00-799e-43f5-93ac-243d3dce84a7",
    "Search Service Contributor": "7ca78c08-252a-4471-8644-bb5ff32d4ba0",
    "Cognitive Services User": "a97b65f3-24c7-4388-baec-2e87135dc908",
    "Cognitive Services OpenAI User": "5e0bd9bd-7b93-4f28-af87-19fc36ad61bd",
    "Monitoring Metrics Publisher": "3913510d-42f4-4e42-8a64-420c390055eb",
}

STORAGE = "Microsoft.Storage/storageAccounts"
SEARCH = "Microsoft.Search/searchServices"
COGNITIVE = "Microsoft.CognitiveServices/accounts"
APP_INSIGHTS = "Microsoft.Insights/components"

# The roles the code path needs: role -> scope resource (type, name parameter in rbac.bicep).
APP_ROLES = [
    # host storage (identity-based AzureWebJobsStorage), blob trigger, deployment package,
    # images, reports, and generateUserDelegationKey for citation SAS URLs
    ("Storage Blob Data Owner", STORAGE, "storageAccountName"),
    ("Storage Queue Data Contributor", STORAGE, "storageAccountName"),  # Durable queues
    ("Storage Table Data Contributor", STORAGE, "storageAccountName"),  # Durable tables
    ("Search Index Data Contributor", SEARCH, "searchServiceName"),  # documents and queries
    ("Search Service Contributor", SEARCH, "searchServiceName"),  # creates <container>-v
    ("Cognitive Services User", COGNITIVE, "visionAccountName"),  # multimodal embeddings
    ("Cognitive Services OpenAI User", COGNITIVE, "openAiAccountName"),  # chat completions
    ("Monitoring Metrics Publisher", APP_INSIGHTS, "applicationInsightsName"),  # telemetry
]

# The person running azd: upload images, inspect indexes, run the app locally against Azure.
USER_ROLES = [
    ("Storage Blob Data Contributor", STORAGE, "storageAccountName"),
    ("Search Index Data Contributor", SEARCH, "searchServiceName"),
    ("Search Service Contributor", SEARCH, "searchServiceName"),
    ("Cognitive Services User", COGNITIVE, "visionAccountName"),
    ("Cognitive Services OpenAI User", COGNITIVE, "openAiAccountName"),
]

# azure-functions-doctor warnings that remain, each explained in the README "Deploy to Azure"
# section. Anything else it reports (a failure, or another warning) fails the test.
DOCTOR_ALLOWED_WARNINGS = {
    "check_native_dependency_risk": "pillow has native code; Flex Consumption builds remotely "
    "on Linux (azd deploy and func azure functionapp publish)",
    "check_dev_storage_connection": "local.settings.example.json is the template of "
    "local.settings.json; .funcignore keeps it out of the package",
    "check_app_insights": "checks the local environment only; Bicep sets "
    "APPLICATIONINSIGHTS_CONNECTION_STRING in Azure",
    "check_blueprint_registration": "false positive on aliased imports (`from api.chat import "
    "bp as chat_api`); function_app.py registers every blueprint",
    "check_asgi_wsgi_exposure": "FastAPI is used through HTTP streams (its Request and Response "
    "types in Functions' own routes), not as an ASGI app to mount",
    "check_func_cli": "Azure Functions Core Tools are not installed where the tests run",
    "check_func_core_tools_version": "Azure Functions Core Tools are not installed where the "
    "tests run",
}

BUILTIN_NAMESPACES = {
    "az",
    "sys",
    "resourceGroup",
    "subscription",
    "tenant",
    "managementGroup",
    "deployment",
    "environment",
    "deployer",
}


# --- parsing -------------------------------------------------------------------------------


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


def _parse(source: bytes) -> Node:
    return _parser().parse(source).root_node


def _walk(node: Node) -> Iterator[Node]:
    yield node
    for child in node.children:
        yield from _walk(child)


def _syntax_errors(root: Node) -> list[str]:
    return [
        f"{'missing' if n.is_missing else 'error'} {n.type!r} at line {n.start_point[0] + 1}: "
        f"{n.text.decode(errors='replace')[:60]!r}"
        for n in _walk(root)
        if n.type == "ERROR" or n.is_missing
    ]


def _text(node: Node) -> str:
    return node.text.decode()


def _string_value(node: Node) -> str:
    """A plain (non-interpolated) Bicep string literal's value."""
    assert node.type == "string", node
    assert not any(c.type == "interpolation" for c in node.children), _text(node)
    return "".join(
        _text(c) for c in node.children if c.type in {"string_content", "escape_sequence"}
    )


def _properties(obj: Node) -> dict[str, Node]:
    """The properties of a Bicep object literal: key -> value node."""
    assert obj.type == "object", obj
    props: dict[str, Node] = {}
    for prop in obj.named_children:
        if prop.type != "object_property":
            continue
        key, value = prop.named_children[0], prop.named_children[-1]
        props[_string_value(key) if key.type == "string" else _text(key)] = value
    return props


def _body(declaration: Node) -> Node:
    """The object of a resource/module declaration, looking through `if` and `for`."""
    node = declaration.named_children[-1]
    while node.type in {"if_statement", "for_statement", "array"}:
        if node.type == "for_statement":
            node = node.child_by_field_name("body") or node.named_children[-1]
        else:
            node = node.named_children[-1]
    assert node.type == "object", _text(declaration)[:80]
    return node


def _for_source(declaration: Node) -> Node | None:
    """The collection a `[for x in <collection>: ...]` declaration iterates, if any."""
    for node in _walk(declaration):
        if node.type == "for_statement":
            initializer = node.child_by_field_name("initializer")
            named = [c for c in node.named_children if c != initializer]
            return named[0]
    return None


@dataclass
class BicepFile:
    path: Path
    root: Node
    params: dict[str, bool] = field(default_factory=dict)  # name -> has a default
    variables: dict[str, Node] = field(default_factory=dict)
    resources: dict[str, tuple[str, Node]] = field(default_factory=dict)  # name -> (type, decl)
    modules: dict[str, tuple[str, Node]] = field(default_factory=dict)  # name -> (path, decl)
    outputs: set[str] = field(default_factory=set)
    loop_variables: set[str] = field(default_factory=set)

    @property
    def symbols(self) -> set[str]:
        return (
            set(self.params)
            | set(self.variables)
            | set(self.resources)
            | set(self.modules)
            | self.loop_variables
        )

    def references(self) -> Iterator[Node]:
        """Identifier nodes that refer to a symbol (not keys, names, or function names)."""
        for node in _walk(self.root):
            if node.type != "identifier":
                continue
            parent = node.parent
            assert parent is not None
            if (
                parent.type
                in {
                    "parameter_declaration",
                    "variable_declaration",
                    "resource_declaration",
                    "module_declaration",
                    "output_declaration",
                    "type_declaration",
                    "user_defined_function",
                }
                and parent.named_children[0] == node
            ):
                continue
            if parent.type == "object_property" and parent.named_children[0] == node:
                continue
            if parent.type == "call_expression" and parent.child_by_field_name("function") == node:
                continue
            if parent.type == "for_statement" and parent.child_by_field_name("initializer") == node:
                continue
            if parent.type in {"for_statement", "loop_enumerator"} and node in self._loop_names:
                continue
            yield node

    @property
    def _loop_names(self) -> set[Node]:
        names: set[Node] = set()
        for node in _walk(self.root):
            if node.type == "for_statement":
                initializer = node.child_by_field_name("initializer")
                if initializer is not None:
                    names.add(initializer)
                    names.update(c for c in _walk(initializer) if c.type == "identifier")
        return names


@cache
def _load(path: Path) -> BicepFile:
    root = _parse(path.read_bytes())
    assert not _syntax_errors(root), (path, _syntax_errors(root))
    bicep = BicepFile(path=path, root=root)
    for decl in root.named_children:
        name = _text(decl.named_children[0]) if decl.named_children else ""
        if decl.type == "parameter_declaration":
            # param <name> <type> [= default]
            bicep.params[name] = len(decl.named_children) > 2
        elif decl.type == "variable_declaration":
            bicep.variables[name] = decl.named_children[-1]
        elif decl.type == "resource_declaration":
            bicep.resources[name] = (_string_value(decl.named_children[1]).split("@")[0], decl)
        elif decl.type == "module_declaration":
            bicep.modules[name] = (_string_value(decl.named_children[1]), decl)
        elif decl.type == "output_declaration":
            bicep.outputs.add(name)
    for node in _walk(root):
        if node.type == "for_statement":
            initializer = node.child_by_field_name("initializer")
            if initializer is not None:
                bicep.loop_variables.update(
                    _text(c) for c in _walk(initializer) if c.type == "identifier"
                )
    return bicep


def _module_params(declaration: Node) -> dict[str, Node]:
    params = _properties(_body(declaration)).get("params")
    return {} if params is None else _properties(params)


def _ids(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- (a) syntax ------------------------------------------------------------------------------


def test_infra_has_the_expected_files() -> None:
    assert MAIN in BICEP_FILES
    for path in (API, RBAC, EVENT_SUBSCRIPTION, INFRA / "main.parameters.json"):
        assert path.is_file(), path


@pytest.mark.parametrize("path", BICEP_FILES, ids=_ids)
def test_bicep_parses_without_syntax_errors(path: Path) -> None:
    root = _parse(path.read_bytes())
    assert root.type == "infrastructure"
    assert _syntax_errors(root) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "param name string = {\n",
        "resource r 'Microsoft.Storage/storageAccounts@2023-05-01' = {\n  name: 'x'\n",
        "var x = [for i in range(0, 2) i]\n",
        "output o string = \n",
    ],
)
def test_parser_reports_broken_bicep(snippet: str) -> None:
    # Guards the test above: the grammar really flags malformed Bicep.
    assert _syntax_errors(_parse(snippet.encode()))


# --- (b) cross-references -------------------------------------------------------------------


@pytest.mark.parametrize("path", BICEP_FILES, ids=_ids)
def test_every_symbol_is_declared(path: Path) -> None:
    bicep = _load(path)
    undeclared = {
        _text(node) for node in bicep.references() if _text(node) not in bicep.symbols
    } - BUILTIN_NAMESPACES
    assert undeclared == set()


@pytest.mark.parametrize("path", BICEP_FILES, ids=_ids)
def test_every_param_is_used(path: Path) -> None:
    bicep = _load(path)
    used = {_text(node) for node in bicep.references()}
    assert set(bicep.params) - used == set()


def test_symbol_check_catches_an_undeclared_name(tmp_path: Path) -> None:
    path = tmp_path / "broken.bicep"
    path.write_text("param used string\noutput o string = '${used}-${notDeclared}'\n")
    bicep = _load(path)
    assert {_text(n) for n in bicep.references()} - bicep.symbols == {"notDeclared"}


def _module_links() -> Iterator[tuple[BicepFile, str, Node, Path]]:
    for path in BICEP_FILES:
        bicep = _load(path)
        for name, (module_path, decl) in bicep.modules.items():
            yield bicep, name, decl, (path.parent / module_path)


def test_modules_exist_and_get_exactly_their_params() -> None:
    links = list(_module_links())
    assert links, "main.bicep declares no modules"
    for bicep, name, decl, target in links:
        where = f"{_ids(bicep.path)}: module {name}"
        assert target.is_file(), f"{where}: {target} does not exist"
        module = _load(target.resolve())
        passed = set(_module_params(decl))
        assert passed - set(module.params) == set(), f"{where}: unknown params"
        required = {p for p, has_default in module.params.items() if not has_default}
        assert required - passed == set(), f"{where}: required params not passed"


def test_module_outputs_referenced_exist() -> None:
    for path in BICEP_FILES:
        bicep = _load(path)
        for node in _walk(bicep.root):
            # <module>.outputs.<name>
            if node.type != "member_expression":
                continue
            inner = node.child_by_field_name("object")
            if inner is None or inner.type != "member_expression":
                continue
            module_node = inner.child_by_field_name("object")
            prop = inner.child_by_field_name("property")
            if module_node is None or prop is None or _text(prop) != "outputs":
                continue
            module_name = _text(module_node)
            assert module_name in bicep.modules, f"{_ids(path)}: {module_name} is not a module"
            target = _load((path.parent / bicep.modules[module_name][0]).resolve())
            output = _text(node.child_by_field_name("property"))  # type: ignore[arg-type]
            assert output in target.outputs, f"{_ids(path)}: {module_name}.outputs.{output}"


def test_main_parameters_file_names_declared_params() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    main = _load(MAIN)
    assert set(parameters) <= set(main.params)
    required = {p for p, has_default in main.params.items() if not has_default}
    assert required <= set(parameters)
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"
    assert parameters["principalId"]["value"] == "${AZURE_PRINCIPAL_ID}"


# --- (c) settings ----------------------------------------------------------------------------


def code_settings() -> set[str]:
    """Every setting the code reads: the *_SETTING constants of imagerag.config, the names it
    reads with get("..."), and the %SETTING% / connection names of the function bindings."""
    import imagerag.config as config

    names = {
        value
        for name, value in vars(config).items()
        if name.endswith("_SETTING") and isinstance(value, str)
    }
    tree = ast.parse(Path(config.__file__).read_text())
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "get"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    for folder in ("api", "activities", "orchestrations"):
        for source in sorted((ROOT / folder).glob("*.py")):
            text = source.read_text()
            names.update(re.findall(r"%([A-Za-z_][A-Za-z0-9_]*)%", text))
            names.update(re.findall(r"""connection\s*=\s*["']([^"']+)["']""", text))
    return names


def bicep_settings() -> tuple[set[str], set[str]]:
    """(settings main.bicep passes to the api module, settings api.bicep adds for the host)."""
    main = _load(MAIN)
    api_module = next(decl for path, decl in main.modules.values() if path == "app/api.bicep")
    from_main = set(_properties(_module_params(api_module)["appSettings"]))
    host = set(_properties(_load(API).variables["hostSettings"]))
    return from_main, host


def test_app_settings_resource_writes_both_lists() -> None:
    api = _load(API)
    config = [
        decl
        for type_, decl in api.resources.values()
        if type_ == "Microsoft.Web/sites/config"
        and _string_value(_properties(_body(decl))["name"]) == "appsettings"
    ]
    assert len(config) == 1
    assert _text(_properties(_body(config[0]))["properties"]) == "union(hostSettings, appSettings)"


def test_code_settings_are_collected() -> None:
    # Guards the collection itself: the names every deployment needs are found.
    assert {
        "IMAGES_CONTAINER",
        "WORK_CONTAINER",
        "AzureWebJobsStorage",
        "AZURE_SEARCH_ENDPOINT",
    } <= code_settings()


def test_bicep_sets_exactly_the_settings_the_code_reads() -> None:
    code = code_settings()
    from_main, host = bicep_settings()
    assert set(NOT_SET_IN_AZURE) <= code, "stale entry in NOT_SET_IN_AZURE"
    assert from_main | host == (code - set(NOT_SET_IN_AZURE)) | set(HOST_ONLY_SETTINGS)
    assert host == set(HOST_ONLY_SETTINGS) | (host & code)
    assert from_main & host == set(), "a setting is written twice"
    assert set(HOST_ONLY_SETTINGS) & code == set(), "a host-only setting is read by the code"


def test_no_keys_or_flex_incompatible_settings() -> None:
    from_main, host = bicep_settings()
    assert (from_main | host) & FORBIDDEN_SETTINGS == set()


def _readme_settings_table() -> dict[str, list[str]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Settings reference\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`([^`]+)`", cells[0]) if line.startswith("|") else None
        if match:
            rows[match.group(1)] = cells
    return rows


def test_readme_documents_every_setting() -> None:
    rows = _readme_settings_table()
    from_main, host = bicep_settings()
    set_by_bicep = from_main | host
    assert set(rows) == code_settings() | set(HOST_ONLY_SETTINGS)
    for name, cells in rows.items():
        assert len(cells) == 5, f"README row {name}: setting, meaning, default, local, Bicep"
        assert cells[4].startswith("yes" if name in set_by_bicep else "no"), name


# --- (d) roles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Assignment:
    role_id: str
    scope_type: str
    scope_name_param: str
    principal: str


def _role_assignments(path: Path) -> set[Assignment]:
    bicep = _load(path)
    found: set[Assignment] = set()
    guid = re.compile(r"'([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})'")
    for type_, decl in bicep.resources.values():
        if type_ != "Microsoft.Authorization/roleAssignments":
            continue
        body = _properties(_body(decl))
        properties = _properties(body["properties"])
        scope = bicep.resources[_text(body["scope"])]
        scope_name = _text(_properties(_body(scope[1]))["name"])
        definition = re.sub(r"\s+", "", _text(properties["roleDefinitionId"]))
        assert definition.startswith(
            "subscriptionResourceId('Microsoft.Authorization/roleDefinitions',"
        ), definition
        source = _for_source(decl)
        if source is not None:
            # [for roleId in <var>: ...] over a list of literal ids
            role_ids = guid.findall(_text(bicep.variables[_text(source)]))
        else:
            role_ids = guid.findall(definition)
        assert role_ids, _text(decl)[:80]
        for role_id in role_ids:
            found.add(Assignment(role_id, scope[0], scope_name, _text(properties["principalId"])))
    return found


def test_role_ids_are_the_built_in_ones() -> None:
    known = set(ROLE_IDS.values())
    for path in BICEP_FILES:
        for assignment in _role_assignments(path):
            assert assignment.role_id in known, (path, assignment)


@pytest.mark.parametrize(("role", "scope_type", "scope_param"), APP_ROLES)
def test_app_identity_has_role(role: str, scope_type: str, scope_param: str) -> None:
    assert Assignment(ROLE_IDS[role], scope_type, scope_param, "appPrincipalId") in (
        _role_assignments(RBAC)
    )


@pytest.mark.parametrize(("role", "scope_type", "scope_param"), USER_ROLES)
def test_deploying_user_has_role(role: str, scope_type: str, scope_param: str) -> None:
    assert Assignment(ROLE_IDS[role], scope_type, scope_param, "userPrincipalId") in (
        _role_assignments(RBAC)
    )


def test_app_identity_gets_nothing_beyond_the_table() -> None:
    granted = {a for a in _role_assignments(RBAC) if a.principal == "appPrincipalId"}
    needed = {Assignment(ROLE_IDS[r], t, p, "appPrincipalId") for r, t, p in APP_ROLES}
    assert granted == needed


def test_rbac_gets_the_app_identity_and_the_user() -> None:
    main = _load(MAIN)
    rbac = next(decl for path, decl in main.modules.values() if path == "app/rbac.bicep")
    params = {k: _text(v) for k, v in _module_params(rbac).items()}
    assert params["appPrincipalId"] == "identity.outputs.principalId"
    assert params["userPrincipalId"] == "principalId"
    api = next(decl for path, decl in main.modules.values() if path == "app/api.bicep")
    api_params = {k: _text(v) for k, v in _module_params(api).items()}
    assert api_params["identityId"] == "identity.outputs.id"
    settings = {k: _text(v) for k, v in _properties(_module_params(api)["appSettings"]).items()}
    # The code's identity, the host's storage identity and the role holder are one identity.
    assert settings["AZURE_CLIENT_ID"] == "identity.outputs.clientId"
    assert settings["AzureWebJobsStorage__clientId"] == "identity.outputs.clientId"
    assert (
        _string_value(
            _properties(_module_params(api)["appSettings"])["AzureWebJobsStorage__credential"]
        )
        == "managedidentity"
    )


def test_keys_are_off_unless_allowed() -> None:
    text = {path.name: path.read_text() for path in BICEP_FILES}
    assert "allowSharedKeyAccess: allowSharedKeyAccess" in text["storage.bicep"]
    assert "minimumTlsVersion: 'TLS1_2'" in text["storage.bicep"]
    assert "disableLocalAuth: !allowKeys" in text["search.bicep"]
    assert "disableLocalAuth: !allowKeys" in text["vision.bicep"]
    assert "disableLocalAuth: !allowKeys" in text["openai.bicep"]
    assert "DisableLocalAuth: true" in text["monitoring.bicep"]
    main = _load(MAIN)
    assert main.params["allowKeys"]
    assert "param allowKeys bool = false" in text["main.bicep"]


def test_no_secrets_in_outputs() -> None:
    for path in BICEP_FILES:
        for node in _walk(_load(path).root):
            if node.type == "output_declaration":
                assert not re.search(r"listKeys|[Kk]ey\b|[Cc]onnectionString", _text(node)), (
                    path,
                    _text(node),
                )


# --- (e) Event Grid and the blob trigger ------------------------------------------------------


def _triggered_functions(decorator_name: str) -> list[tuple[str, dict[str, str]]]:
    """(function name, trigger keyword arguments) of each function in api/ decorated with
    `@bp.<decorator_name>(...)`."""
    found = []
    for source in sorted((ROOT / "api").glob("*.py")):
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            name, trigger = node.name, None
            for decorator in node.decorator_list:
                if not (
                    isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute)
                ):
                    continue
                if decorator.func.attr == "function_name":
                    name = ast.literal_eval(decorator.args[0])
                if decorator.func.attr == decorator_name:
                    trigger = {
                        k.arg: ast.unparse(k.value)
                        if not isinstance(k.value, ast.Constant)
                        else k.value.value
                        for k in decorator.keywords
                        if k.arg
                    }
            if trigger is not None:
                found.append((name, trigger))
    return found


def _blob_trigger() -> tuple[str, dict[str, str]]:
    """(function name, blob_trigger keyword arguments) of the one blob-triggered function."""
    found = _triggered_functions("blob_trigger")
    assert len(found) == 1, found
    return found[0]


def _param_default(bicep: BicepFile, name: str) -> str:
    declaration, _ = _param_declaration(bicep, name)
    return _string_value(declaration.named_children[-1])


def _subscription_properties(symbol: str) -> dict[str, Node]:
    """properties of the event subscription declared as `symbol` in eventgrid-subscription."""
    kind, declaration = _load(EVENT_SUBSCRIPTION).resources[symbol]
    assert kind == "Microsoft.EventGrid/systemTopics/eventSubscriptions"
    return _properties(_properties(_body(declaration))["properties"])


def test_event_subscription_targets_the_blob_trigger() -> None:
    function_name, trigger = _blob_trigger()
    bicep = _load(EVENT_SUBSCRIPTION)
    assert _param_default(bicep, "functionName") == function_name == "ingest_metadata_trigger"

    props = _subscription_properties("subscription")
    destination = _properties(props["destination"])
    assert _string_value(destination["endpointType"]) == "WebHook"
    url = _text(_properties(destination["properties"])["endpointUrl"])
    assert "/runtime/webhooks/blobs?functionName=Host.Functions.${functionName}" in url
    assert "&code=${functionHost.listKeys().systemKeys.blobs_extension}" in url

    event_filter = _properties(props["filter"])
    assert _text(event_filter["includedEventTypes"]) == "['Microsoft.Storage.BlobCreated']"
    # The trigger path %IMAGES_CONTAINER%/metadata{name}.json, as a subject filter.
    path = trigger["path"]
    match = re.fullmatch(r"%IMAGES_CONTAINER%/(\w+)\{name\}(\.\w+)", path)
    assert match, path
    prefix, suffix = match.groups()
    assert _text(event_filter["subjectBeginsWith"]) == (
        f"'/blobServices/default/containers/${{imagesContainerName}}/blobs/{prefix}'"
    )
    assert _string_value(event_filter["subjectEndsWith"]) == suffix
    assert _text(event_filter["isSubjectCaseSensitive"]) == "true"
    assert "retryPolicy" in props
    assert "deadLetterWithResourceIdentity" in props


# The Event Grid triggered function that hears metadata files created and deleted (issue 11).
METADATA_EVENTS_FUNCTION = "metadata_events"


def test_metadata_subscription_targets_the_event_grid_trigger() -> None:
    bicep = _load(EVENT_SUBSCRIPTION)
    assert _param_default(bicep, "metadataFunctionName") == METADATA_EVENTS_FUNCTION
    props = _subscription_properties("metadataSubscription")
    destination = _properties(props["destination"])
    assert _string_value(destination["endpointType"]) == "WebHook"
    url = _text(_properties(destination["properties"])["endpointUrl"])
    # The Event Grid extension's webhook, with its system key read from the host's keys.
    assert url.startswith("'https://${functionApp.properties.defaultHostName}/")
    assert "/runtime/webhooks/eventgrid?functionName=${metadataFunctionName}" in url
    assert "&code=${functionHost.listKeys().systemKeys.eventgrid_extension}'" in url
    assert _string_value(props["eventDeliverySchema"]) == "EventGridSchema"


def test_metadata_subscription_function_exists_in_the_app() -> None:
    triggers = [name for name, _ in _triggered_functions("event_grid_trigger")]
    assert triggers == [METADATA_EVENTS_FUNCTION]


def test_metadata_subscription_hears_json_created_and_deleted_in_any_container() -> None:
    event_filter = _properties(_subscription_properties("metadataSubscription")["filter"])
    types = [_string_value(t) for t in event_filter["includedEventTypes"].named_children]
    assert types == ["Microsoft.Storage.BlobCreated", "Microsoft.Storage.BlobDeleted"]
    # Any container: a prefix no narrower than the blob service, no advanced filter.
    assert _string_value(event_filter["subjectBeginsWith"]) == "/blobServices/default/containers/"
    assert _string_value(event_filter["subjectEndsWith"]) == ".json"
    # Meta.JSON reaches the function too, so it can say why such a name is not ingested.
    assert _text(event_filter["isSubjectCaseSensitive"]) == "false"
    assert set(event_filter) == {
        "includedEventTypes",
        "subjectBeginsWith",
        "subjectEndsWith",
        "isSubjectCaseSensitive",
    }


def test_both_subscriptions_share_retry_and_dead_letter() -> None:
    bicep = _load(EVENT_SUBSCRIPTION)
    for symbol in ("subscription", "metadataSubscription"):
        props = _subscription_properties(symbol)
        assert _text(props["retryPolicy"]) == "retryPolicy"
        assert _text(props["deadLetterWithResourceIdentity"]) == "deadLetter"
    retry = {k: _text(v) for k, v in _properties(bicep.variables["retryPolicy"]).items()}
    assert retry == {"maxDeliveryAttempts": "30", "eventTimeToLiveInMinutes": "1440"}
    dead_letter = _properties(bicep.variables["deadLetter"])
    assert _text(_properties(dead_letter["identity"])["type"]) == "'SystemAssigned'"
    destination = _properties(dead_letter["deadLetterDestination"])
    assert _string_value(destination["endpointType"]) == "StorageBlob"
    target = {k: _text(v) for k, v in _properties(destination["properties"]).items()}
    assert target == {"resourceId": "storage.id", "blobContainerName": "deadLetterContainerName"}


def test_one_flag_creates_both_subscriptions() -> None:
    main = _load(MAIN)
    (declaration,) = [
        decl for path, decl in main.modules.values() if path == "app/eventgrid-subscription.bicep"
    ]
    condition = next(n for n in declaration.named_children if n.type == "if_statement")
    assert "eventSubscriptionEnabled" in _text(condition.named_children[0])
    assert len(_load(EVENT_SUBSCRIPTION).resources) == 6  # 4 existing, 2 subscriptions


def test_event_subscription_watches_the_images_container() -> None:
    main = _load(MAIN)
    module = next(
        decl for path, decl in main.modules.values() if path == "app/eventgrid-subscription.bicep"
    )
    params = {k: _text(v) for k, v in _module_params(module).items()}
    api = next(decl for path, decl in main.modules.values() if path == "app/api.bicep")
    settings = {k: _text(v) for k, v in _properties(_module_params(api)["appSettings"]).items()}
    # One parameter feeds both the trigger's %IMAGES_CONTAINER% and the subject filter.
    assert params["imagesContainerName"] == settings["IMAGES_CONTAINER"] == "imagesContainerName"
    storage = next(decl for path, decl in main.modules.values() if path == "app/storage.bicep")
    containers = _text(_module_params(storage)["containerNames"])
    for name in ("imagesContainerName", "workContainerName", "deadLetterContainerName"):
        assert name in containers
    assert params["deadLetterContainerName"] == "deadLetterContainerName"


def test_blob_trigger_uses_the_event_grid_source_in_azure() -> None:
    # Flex Consumption runs only the Event Grid source of the blob trigger; locally (Azurite,
    # devhost) the container scan is used, so the source is a setting.
    import imagerag.config as config

    _, trigger = _blob_trigger()
    assert trigger.get("connection") == "AzureWebJobsStorage"
    source = str(trigger.get("source"))
    if source not in {"func.BlobSource.EVENT_GRID", "EventGrid"}:
        assert "ingest_trigger_source()" in source, source
        main = _load(MAIN)
        api = next(decl for path, decl in main.modules.values() if path == "app/api.bicep")
        settings = _properties(_module_params(api)["appSettings"])
        value = _string_value(settings[config.INGEST_TRIGGER_SOURCE_SETTING])
        assert value == "EventGrid"
        assert config.ingest_trigger_source({config.INGEST_TRIGGER_SOURCE_SETTING: value}) == value


# --- Flex Consumption, host.json, azd ---------------------------------------------------------


def test_function_app_is_flex_consumption_python_311() -> None:
    api = _load(API)
    plan = next(d for t, d in api.resources.values() if t == "Microsoft.Web/serverfarms")
    sku = {k: _text(v) for k, v in _properties(_properties(_body(plan))["sku"]).items()}
    assert sku == {"name": "'FC1'", "tier": "'FlexConsumption'"}
    site = next(d for t, d in api.resources.values() if t == "Microsoft.Web/sites")
    config = _properties(_properties(_properties(_body(site))["properties"])["functionAppConfig"])
    runtime = {k: _text(v) for k, v in _properties(config["runtime"]).items()}
    assert runtime == {"name": "'python'", "version": "'3.11'"}
    storage = _properties(_properties(config["deployment"])["storage"])
    assert _string_value(storage["type"]) == "blobContainer"
    auth = _properties(storage["authentication"])
    assert _string_value(auth["type"]) == "UserAssignedIdentity"
    assert "linuxFxVersion" not in _text(site)


def test_host_json_for_python_on_flex() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
    durable = host["extensions"]["durableTask"]
    assert durable["hubName"] == "imagerag"
    activities = durable["maxConcurrentActivityFunctions"]
    orchestrators = durable["maxConcurrentOrchestratorFunctions"]
    # Sync activities and orchestrators each hold a worker thread while they run.
    threads = _text(
        _properties(_load(API).variables["hostSettings"])["PYTHON_THREADPOOL_THREAD_COUNT"]
    )
    assert int(threads.strip("'")) == activities + orchestrators


def test_azure_yaml_deploys_the_root_as_a_python_function() -> None:
    text = (ROOT / "azure.yaml").read_text()
    assert re.search(r"^name: imagerag$", text, re.M)
    assert re.search(
        r"^  api:\n    project: \.\n    language: python\n    host: function$", text, re.M
    )
    assert re.search(r"^infra:\n  provider: bicep\n  path: infra$", text, re.M)
    # The event subscription is enabled after the code is deployed (see the hooks tests below).
    for hook in ("preup", "postdeploy", "postdown"):
        for shell in ("posix", "windows"):
            assert (ROOT / _hook_script(hook, shell)).is_file(), (hook, shell)
    parameters = (INFRA / "main.parameters.json").read_text()
    assert '"${IMAGERAG_EVENT_SUBSCRIPTION=false}"' in parameters


def test_funcignore_keeps_local_only_files_out() -> None:
    ignored = set((ROOT / ".funcignore").read_text().split())
    for entry in (
        ".venv",
        "node_modules",
        "tests",
        "bench",
        "devhost",
        ".azurite",
        ".devhost",
        ".imagerag",
        "infra",
        "local.settings.json",
        "local.settings.example.json",
        "requirements-local.txt",
        "requirements-dev.txt",
    ):
        assert entry in ignored, entry


# --- (g) what Azure itself would refuse: model lifecycle, principal type, hooks, regions --------

# Azure OpenAI chat model versions that are retired, closed to new customers (deprecated) or
# legacy, with the retirement date Azure gives. Sources, read 2026-12-01:
# [1] "Model retirement schedule", Microsoft Foundry docs, updated 2026-09-02:
#     https://learn.microsoft.com/azure/foundry/openai/concepts/model-retirement-schedule
# [2] the same table on 2026-04-23 (MicrosoftDocs/azure-ai-docs,
#     articles/foundry/openai/includes/concepts-model-retirement-schedule-content.md): gpt-4o
#     2024-11-20 closed to new customers 2025-11-20, retiring 2026-10-01 (the date issue 17 cites).
# [3] "Azure OpenAI reasoning models", updated 2026-02-24: the GPT-5 series takes image input on
#     chat completions, no temperature/top_p, max_completion_tokens:
#     https://learn.microsoft.com/azure/foundry/openai/how-to/reasoning
# [4] "Azure OpenAI API version lifecycle", updated 2026-03-19: dated versions stop at
#     2025-04-01-preview (newest) and 2024-10-21 (GA, before the reasoning models); the
#     versionless v1 API replaces them:
#     https://learn.microsoft.com/azure/foundry/openai/api-version-lifecycle
RETIRED_CHAT_MODELS: dict[tuple[str, str], tuple[str, str]] = {
    # (model, version): (lifecycle, retirement date)
    ("gpt-4o", "2024-05-13"): ("Deprecated", "2026-10-01"),  # [1]
    ("gpt-4o", "2024-08-06"): ("Deprecated", "2027-04-14"),  # [1]
    ("gpt-4o", "2024-11-20"): ("Legacy", "2026-10-01"),  # [2]; [1] moved it to 2027-04-14
    ("gpt-4o-mini", "2024-07-18"): ("Deprecated", "2027-04-14"),  # [1]
    ("gpt-4.1", "2025-04-14"): ("Legacy", "2027-04-14"),  # [1]
    ("gpt-4.1-mini", "2025-04-14"): ("Legacy", "2027-04-14"),  # [1]
    ("gpt-4.1-nano", "2025-04-14"): ("Legacy", "2027-04-14"),  # [1]
    ("gpt-5-chat", "2025-08-07"): ("Retired", "2026-06-29"),  # [1]
    ("gpt-5-chat", "2025-10-03"): ("Retired", "2026-05-13"),  # [1]
    ("gpt-5.1-chat", "2025-11-13"): ("Retired", "2026-06-29"),  # [1]
    ("gpt-5.2-chat", "2025-12-11"): ("Retired", "2026-05-13"),  # [1]
    ("gpt-5.2-chat", "2026-02-10"): ("Retired", "2026-06-29"),  # [1]
    ("gpt-5.3-chat", "2026-03-03"): ("Retired", "2026-06-29"),  # [1]
    ("o1", "2024-12-17"): ("Deprecated", "2026-10-21"),  # [1]
    ("o3-mini", "2025-01-31"): ("Deprecated", "2026-10-01"),  # [1]
    ("o3", "2025-04-16"): ("GA", "2026-10-21"),  # [1]: past its date
    ("o4-mini", "2025-04-16"): ("Deprecated", "2026-10-16"),  # [1]
}

# Generally available GPT-5 series chat models on [1] (image input on chat completions: [3]) and
# their retirement dates: the default must be one of them, with at least a year left when it was
# chosen and the latest date among them. [1] lists no GPT-6 model yet.
GA_CHAT_MODELS: dict[tuple[str, str], str] = {
    ("gpt-5", "2025-08-07"): "2027-02-09",
    ("gpt-5-mini", "2025-08-07"): "2027-02-09",
    ("gpt-5.1", "2025-11-13"): "2027-05-15",
    ("gpt-5.2", "2025-12-11"): "2027-06-08",
    ("gpt-5.4", "2026-03-05"): "2027-09-02",
    ("gpt-5.4-mini", "2026-03-17"): "2027-09-21",
    ("gpt-5.5", "2026-04-24"): "2027-10-26",
    ("gpt-5.6-luna", "2026-07-09"): "2028-01-11",
    ("gpt-5.6-sol", "2026-07-09"): "2028-01-11",
    ("gpt-5.6-terra", "2026-07-09"): "2028-01-11",
}
MODEL_CHOSEN_ON = date(2026, 12, 1)

# The "Multimodal embeddings" column of the Image Analysis region table (Azure AI Vision docs,
# overview-image-analysis.md#region-availability, 2025-09-16 revision, current on 2026-12-01).
MULTIMODAL_EMBEDDINGS_REGIONS = {
    "eastus",
    "westus",
    "westus2",
    "francecentral",
    "northeurope",
    "westeurope",
    "swedencentral",
    "switzerlandnorth",
    "australiaeast",
    "southeastasia",
    "koreacentral",
    "japaneast",
}

# Regions with Flex Consumption, as allowed by Microsoft's Flex Consumption azd templates
# (Azure-Samples/remote-mcp-functions-python, infra/main.bicep; `eastus2euap` is a canary region
# and left out). `az functionapp list-flexconsumption-locations` gives the live list.
FLEX_CONSUMPTION_REGIONS = {
    "australiaeast",
    "australiasoutheast",
    "brazilsouth",
    "canadacentral",
    "centralindia",
    "centralus",
    "eastasia",
    "eastus",
    "eastus2",
    "francecentral",
    "germanywestcentral",
    "italynorth",
    "japaneast",
    "koreacentral",
    "northcentralus",
    "northeurope",
    "norwayeast",
    "southafricanorth",
    "southcentralus",
    "southeastasia",
    "southindia",
    "spaincentral",
    "swedencentral",
    "uaenorth",
    "uksouth",
    "ukwest",
    "westcentralus",
    "westeurope",
    "westus",
    "westus2",
    "westus3",
}

EVENT_SUBSCRIPTION_FLAG = "IMAGERAG_EVENT_SUBSCRIPTION"


def _param_declaration(bicep: BicepFile, name: str) -> tuple[Node, Node | None]:
    """(parameter_declaration, its decorators node or None)."""
    decorators: Node | None = None
    for node in bicep.root.named_children:
        if node.type == "decorators":
            decorators = node
        elif node.type == "parameter_declaration":
            if _text(node.named_children[0]) == name:
                return node, decorators
            decorators = None
        elif node.type != "comment":
            decorators = None
    raise AssertionError(f"{_ids(bicep.path)}: no param {name}")


def _param_default(bicep: BicepFile, name: str) -> str:
    declaration, _ = _param_declaration(bicep, name)
    assert bicep.params[name], f"{name} has no default"
    value = declaration.named_children[-1]
    return _string_value(value) if value.type == "string" else _text(value)


def _decorator_argument(bicep: BicepFile, param: str, decorator: str) -> Node | None:
    _, decorators = _param_declaration(bicep, param)
    if decorators is None:
        return None
    for node in decorators.named_children:
        if node.type != "decorator":
            continue
        call = node.named_children[0]
        if call.type == "call_expression" and _text(call.named_children[0]) == decorator:
            return call.named_children[-1].named_children[0]
    return None


def _allowed(bicep: BicepFile, param: str) -> list[str]:
    values = _decorator_argument(bicep, param, "allowed")
    assert values is not None and values.type == "array", param
    return [_string_value(v) for v in values.named_children if v.type == "string"]


def _azd_metadata(bicep: BicepFile, param: str) -> dict[str, Node]:
    metadata = _decorator_argument(bicep, param, "metadata")
    assert metadata is not None, f"{param} has no @metadata"
    return _properties(_properties(metadata)["azd"])


def _readme_default(setting: str) -> str:
    cell = _readme_settings_table()[setting][2]
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, cell
    return match.group(1)


def test_chat_model_default_is_not_retired_and_has_runway() -> None:
    main = _load(MAIN)
    model = (_param_default(main, "chatModelName"), _param_default(main, "chatModelVersion"))
    assert model not in RETIRED_CHAT_MODELS, RETIRED_CHAT_MODELS.get(model)
    assert model in GA_CHAT_MODELS, f"{model} is not a GA chat model with image input on [1]"
    retires = date.fromisoformat(GA_CHAT_MODELS[model])
    assert (retires - MODEL_CHOSEN_ON).days >= 365, retires
    assert retires > date.today(), f"{model} retired on {retires}: choose its successor"
    # The longest runway among the GA candidates.
    assert retires == max(date.fromisoformat(d) for d in GA_CHAT_MODELS.values())


def test_retired_models_table_guards_the_old_default() -> None:
    # Guards the table: the version issue 17 found is in it, with its sources' dates.
    assert RETIRED_CHAT_MODELS[("gpt-4o", "2024-11-20")] == ("Legacy", "2026-10-01")
    assert set(RETIRED_CHAT_MODELS).isdisjoint(GA_CHAT_MODELS)
    for lifecycle, retires in RETIRED_CHAT_MODELS.values():
        assert lifecycle in {"Retired", "Deprecated", "Legacy", "GA"}
        date.fromisoformat(retires)


def test_chat_deployment_follows_new_versions_and_takes_parameters() -> None:
    main = _load(MAIN)
    module = next(d for p, d in main.modules.values() if p == "app/openai.bicep")
    params = {k: _text(v) for k, v in _module_params(module).items()}
    assert params["modelName"] == "chatModelName"
    assert params["modelVersion"] == "chatModelVersion"
    assert params["deploymentName"] == "chatDeploymentName"
    assert params["deploymentSku"] == "chatDeploymentSku"
    assert params["capacity"] == "chatDeploymentCapacity"
    openai = _load(INFRA / "app" / "openai.bicep")
    _, deployment = next(
        (t, d)
        for t, d in openai.resources.values()
        if t == "Microsoft.CognitiveServices/accounts/deployments"
    )
    props = _properties(_properties(_body(deployment))["properties"])
    assert _string_value(props["versionUpgradeOption"]) == "OnceCurrentVersionExpired"
    model = {k: _text(v) for k, v in _properties(props["model"]).items()}
    assert model == {"format": "'OpenAI'", "name": "modelName", "version": "modelVersion"}


def test_openai_defaults_agree_in_bicep_code_and_readme() -> None:
    import imagerag.config as config

    main = _load(MAIN)
    deployment = _param_default(main, "chatDeploymentName")
    api_version = _param_default(main, "openAiApiVersion")
    assert (
        deployment
        == config.DEFAULT_OPENAI_DEPLOYMENT
        == _readme_default(config.OPENAI_DEPLOYMENT_SETTING)
    )
    assert (
        api_version
        == config.DEFAULT_OPENAI_API_VERSION
        == _readme_default(config.OPENAI_API_VERSION_SETTING)
    )
    # A dated data-plane version that serves reasoning models on the deployments path [4]:
    # later than the GA 2024-10-21, at most the newest dated one.
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}(-preview)?", api_version), api_version
    assert "2024-12-01" <= api_version[:10] <= "2025-04-01", api_version


def test_principal_type_flows_from_the_parameters_file() -> None:
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    # azd sets AZURE_PRINCIPAL_TYPE (ServicePrincipal when it runs as one, in CI).
    assert parameters["principalType"]["value"] == "${AZURE_PRINCIPAL_TYPE=User}"
    main = _load(MAIN)
    assert _allowed(main, "principalType") == ["User", "ServicePrincipal", "Group"]
    rbac = next(d for p, d in main.modules.values() if p == "app/rbac.bicep")
    assert _text(_module_params(rbac)["userPrincipalType"]) == "principalType"
    bicep = _load(RBAC)
    for type_, decl in bicep.resources.values():
        if type_ != "Microsoft.Authorization/roleAssignments":
            continue
        properties = _properties(_properties(_body(decl))["properties"])
        principal = _text(properties["principalId"])
        expected = "userPrincipalType" if principal == "userPrincipalId" else "'ServicePrincipal'"
        assert _text(properties["principalType"]) == expected, principal


@pytest.mark.parametrize("path", BICEP_FILES, ids=_ids)
def test_role_assignment_names_include_the_principal(path: Path) -> None:
    # guid(scope, principal, role): a recreated identity gets a new name instead of
    # RoleAssignmentUpdateNotPermitted on the old one.
    for type_, decl in _load(path).resources.values():
        if type_ != "Microsoft.Authorization/roleAssignments":
            continue
        body = _properties(_body(decl))
        name = body["name"]
        assert name.type == "call_expression" and _text(name.named_children[0]) == "guid"
        arguments = [_text(a) for a in name.named_children[-1].named_children]
        principal = _text(_properties(body["properties"])["principalId"])
        assert principal in arguments, (_ids(path), arguments)


def test_event_grid_topic_role_is_named_after_its_identity() -> None:
    topic = _load(INFRA / "app" / "eventgrid-topic.bicep")
    assert not any(
        t == "Microsoft.Authorization/roleAssignments" for t, _ in topic.resources.values()
    ), "a name with the topic's principal id needs the assignment in a module"
    module = next(d for p, d in topic.modules.values() if p == "deadletter-access.bicep")
    params = {k: _text(v) for k, v in _module_params(module).items()}
    assert params["principalId"] == "topic.identity.principalId"
    assert params["containerName"] == "deadLetterContainerName"
    access = _role_assignments(INFRA / "app" / "deadletter-access.bicep")
    assert access == {
        Assignment(
            ROLE_IDS["Storage Blob Data Contributor"],
            "Microsoft.Storage/storageAccounts/blobServices/containers",
            "containerName",
            "principalId",
        )
    }


def test_regions_are_checked_with_the_parameters() -> None:
    main = _load(MAIN)
    assert set(_allowed(main, "visionLocation")) == MULTIMODAL_EMBEDDINGS_REGIONS
    assert {"swedencentral", "switzerlandnorth"} <= MULTIMODAL_EMBEDDINGS_REGIONS
    assert _param_default(main, "visionLocation") in MULTIMODAL_EMBEDDINGS_REGIONS
    assert set(_allowed(main, "location")) == FLEX_CONSUMPTION_REGIONS
    for param in ("location", "visionLocation", "openAiLocation"):
        assert _string_value(_azd_metadata(main, param)["type"]) == "location", param


def test_openai_location_is_offered_only_where_the_model_has_quota() -> None:
    main = _load(MAIN)
    # Required and empty in a fresh azd environment, so azd prompts with its location list,
    # filtered by usageName: OpenAI.<sku>.<model>,<capacity> of the chat deployment.
    assert not main.params["openAiLocation"]
    parameters = json.loads((INFRA / "main.parameters.json").read_text())["parameters"]
    assert parameters["openAiLocation"]["value"] == "${AZURE_OPENAI_LOCATION}"
    usage = _azd_metadata(main, "openAiLocation")["usageName"]
    names = [_string_value(v) for v in usage.named_children if v.type == "string"]
    expected = (
        f"OpenAI.{_param_default(main, 'chatDeploymentSku')}."
        f"{_param_default(main, 'chatModelName')},{_param_default(main, 'chatDeploymentCapacity')}"
    )
    assert names == [expected]
    module = next(d for p, d in main.modules.values() if p == "app/openai.bicep")
    assert _text(_module_params(module)["location"]) == "openAiLocation"


# --- azd hooks: a fake azd that keeps an environment the way azd does -------------------------

FAKE_AZD = """#!{python}
import json, os, sys
from pathlib import Path

state_path = Path(os.environ["FAKE_AZD_STATE"])
state = json.loads(state_path.read_text())
args = sys.argv[1:]
rc = 0
if args[:2] == ["env", "set"] and len(args) == 4:
    state["dotenv"][args[2]] = args[3]
elif args == ["provision", "--no-prompt"]:
    # azd resolves ${{NAME}} in main.parameters.json from the environment's .env first, then
    # the process environment (Environment.Getenv in azure-dev).
    name = os.environ["FAKE_AZD_WATCH"]
    state["provisions"].append(state["dotenv"].get(name, os.environ.get(name)))
    rc = int(os.environ.get("FAKE_AZD_PROVISION_RC", "0"))
else:
    rc = 64
    print("fake azd: unexpected", args, file=sys.stderr)
state_path.write_text(json.dumps(state))
sys.exit(rc)
"""


def _hook_script(hook: str, shell: str = "posix") -> str:
    text = (ROOT / "azure.yaml").read_text()
    section = re.search(rf"^  {hook}:\n((?:    .*\n)+)", text, re.M)
    assert section, f"azure.yaml has no {hook} hook"
    match = re.search(
        rf"^    {shell}:\n      shell: (\w+)\n      run: (\S+)\n      continueOnError: false$",
        section.group(1),
        re.M,
    )
    assert match, (hook, shell)
    assert match.group(1) == ("sh" if shell == "posix" else "pwsh")
    return match.group(2)


def _parameter_reference(name: str) -> tuple[str, str | None]:
    value = json.loads((INFRA / "main.parameters.json").read_text())["parameters"][name]["value"]
    match = re.fullmatch(r"\$\{(\w+)(?:=([^}]*))?\}", value)
    assert match, value
    return match.group(1), match.group(2)


class FakeAzd:
    """Runs the project's posix hooks against a fake `azd` on PATH, as azd runs them: the
    environment's values in the hook's process environment."""

    def __init__(self, tmp_path: Path, dotenv: dict[str, str] | None = None) -> None:
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        azd = self.bin / "azd"
        azd.write_text(FAKE_AZD.format(python=sys.executable))
        azd.chmod(0o755)
        self.state = tmp_path / "azd-state.json"
        self.state.write_text(json.dumps({"dotenv": dotenv or {}, "provisions": []}))
        self.flag, self.default = _parameter_reference("eventSubscriptionEnabled")

    @property
    def dotenv(self) -> dict[str, str]:
        return dict(json.loads(self.state.read_text())["dotenv"])

    @property
    def provisions(self) -> list[str | None]:
        return list(json.loads(self.state.read_text())["provisions"])

    def run_hook(self, hook: str, provision_rc: int = 0) -> int:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("IMAGERAG_", "AZURE_", "FAKE_AZD"))
        }
        env.update(self.dotenv)
        env["PATH"] = f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"
        env["FAKE_AZD_STATE"] = str(self.state)
        env["FAKE_AZD_WATCH"] = self.flag
        env["FAKE_AZD_PROVISION_RC"] = str(provision_rc)
        result = subprocess.run(
            ["sh", str(ROOT / _hook_script(hook))],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert "unexpected" not in result.stderr, result.stderr
        return result.returncode

    def subscription_in_next_provision(self) -> bool:
        """eventSubscriptionEnabled of a provision azd starts from a clean shell."""
        value = self.dotenv.get(self.flag, self.default)
        return value == "true"


def test_event_subscription_flag_defaults_to_false() -> None:
    assert _parameter_reference("eventSubscriptionEnabled") == (EVENT_SUBSCRIPTION_FLAG, "false")
    assert "param eventSubscriptionEnabled bool = false" in MAIN.read_text()


def test_postdeploy_creates_the_subscription_and_leaves_nothing_behind(tmp_path: Path) -> None:
    azd = FakeAzd(tmp_path)
    assert not azd.subscription_in_next_provision()
    assert azd.run_hook("postdeploy") == 0
    assert azd.provisions == ["true"]  # the nested provision creates the subscription
    assert azd.dotenv == {EVENT_SUBSCRIPTION_FLAG: "false"}
    assert not azd.subscription_in_next_provision()


def test_postdeploy_resets_the_flag_when_the_provision_fails(tmp_path: Path) -> None:
    azd = FakeAzd(tmp_path)
    assert azd.run_hook("postdeploy", provision_rc=3) == 3
    assert azd.provisions == ["true"]
    assert not azd.subscription_in_next_provision()


@pytest.mark.parametrize("hook", ["preup", "postdown"])
def test_leftover_flag_is_cleared(tmp_path: Path, hook: str) -> None:
    # An interrupted postdeploy, or the previous version of the hook, left the flag true.
    azd = FakeAzd(tmp_path, {EVENT_SUBSCRIPTION_FLAG: "true"})
    assert azd.run_hook(hook) == 0
    assert azd.provisions == []
    assert not azd.subscription_in_next_provision()


def test_azd_up_after_azd_down_provisions_before_subscribing(tmp_path: Path) -> None:
    azd = FakeAzd(tmp_path)
    for _ in range(2):  # azd up, azd down, azd up
        assert azd.run_hook("preup") == 0
        assert not azd.subscription_in_next_provision()  # before any code is deployed
        assert azd.run_hook("postdeploy") == 0  # after azd deploy
        assert azd.run_hook("postdown") == 0
    assert azd.provisions == ["true", "true"]
    assert not azd.subscription_in_next_provision()


def test_windows_hooks_run_the_same_azd_commands() -> None:
    def azd_commands(script: str) -> list[str]:
        return [
            line.strip()
            for line in (ROOT / script).read_text().splitlines()
            if line.strip().startswith("azd ")
        ]

    for hook in ("preup", "postdeploy", "postdown"):
        posix = azd_commands(_hook_script(hook, "posix"))
        windows = azd_commands(_hook_script(hook, "windows"))
        assert posix and [c.split(" ||")[0] for c in posix] == windows, hook
    postdeploy = (ROOT / _hook_script("postdeploy", "windows")).read_text()
    assert "exit $status" in postdeploy


# --- (f) azure-functions-doctor ---------------------------------------------------------------


def test_azure_functions_doctor_finds_nothing_unexplained(tmp_path: Path) -> None:
    doctor = Path(sys.executable).parent / "azure-functions-doctor"
    assert doctor.is_file(), "azure-functions-doctor is in requirements-dev.txt"
    # A fresh checkout as a developer has it after ./scripts/dev.sh: the doctor reads
    # local.settings.json (git-ignored, made from the example) and nothing untracked.
    project = tmp_path / "project"
    shutil.copytree(
        ROOT,
        project,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "node_modules", ".azurite", ".devhost", ".imagerag", "*cache*"
        ),
    )
    shutil.copy(project / "local.settings.example.json", project / "local.settings.json")
    result = subprocess.run(
        [
            str(doctor),
            "doctor",
            "--path",
            str(project),
            "--profile",
            "full",
            "--hosting-plan",
            "flex-consumption",
            "--target-python",
            "3.11",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        timeout=180,
        # The tests run in the project's virtual environment, activated or not.
        env={**os.environ, "VIRTUAL_ENV": sys.prefix},
        check=False,
    )
    report = json.loads(result.stdout)
    findings = {
        item["rule_id"]: (item["status"], item["value"])
        for section in report["results"]
        for item in section["items"]
        if item["status"] not in {"pass", "skip"}
    }
    failures = {k: v for k, v in findings.items() if v[0] != "warn"}
    assert failures == {}
    unexplained = {k: v for k, v in findings.items() if k not in DOCTOR_ALLOWED_WARNINGS}
    assert unexplained == {}
    readme = (ROOT / "README.md").read_text()
    for rule_id in DOCTOR_ALLOWED_WARNINGS:
        assert f"`{rule_id}`" in readme, f"README does not explain {rule_id}"


def test_cors_origins_are_a_parameter_azd_can_set() -> None:
    """The playground hosted elsewhere needs its origin allowed: one comma-separated parameter,
    reachable from the azd environment, handed to the app's platform CORS without credentials."""
    main = _load(MAIN)
    assert "corsAllowedOrigins" in main.params
    assert _parameter_reference("corsAllowedOrigins") == (
        "IMAGERAG_CORS_ORIGINS",
        "https://portal.azure.com",
    )
    text = MAIN.read_text()
    assert "corsAllowedOrigins: corsOrigins" in text
    assert "split(replace(corsAllowedOrigins, ' ', ''), ',')" in text
    api = API.read_text()
    assert re.search(
        r"cors: \{\s*allowedOrigins: corsAllowedOrigins\s*//[^\n]*\n\s*supportCredentials: false",
        api,
    )
    assert "IMAGERAG_CORS_ORIGINS" in (ROOT / "README.md").read_text()
