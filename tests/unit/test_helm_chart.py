"""helm/signer-proxy, tested with what runs here (no helm binary can be installed):

- values.yaml against values.schema.json (jsonschema, as helm does at install), and the
  schema refusing wrong values;
- yamllint on the chart's YAML and on rendered manifests;
- every `.Values.x.y` in the templates exists in values.yaml, and every value is used;
- values.config and the schema map 1:1 onto Settings fields;
- a real render: tests/fixtures/chart_render, Go's text/template with sprig and helm's own
  functions (Debian packages, installed by `make tools`), the same engine helm uses; the
  manifests are then checked, and the rendered config file is loaded by load_settings.

Not possible here: validating manifests against a cluster's API schemas, installing the
chart, helm hooks and `helm lint` itself.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from yamllint import linter
from yamllint.config import YamlLintConfig

from signer_proxy import __version__
from signer_proxy.config import (
    CHAIN_ENTRY_KEYS,
    CHAIN_SETTINGS,
    FIELDS,
    ChainConfig,
    Settings,
    field_type,
    load_settings,
)
from signer_proxy.ops.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "signer-proxy"
TEMPLATES = CHART / "templates"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA = json.loads((CHART / "values.schema.json").read_text())
GOPATH = "/usr/share/gocode"

# The chart's deliberate departures from the Settings defaults, and why.
CHART_DEFAULTS = {
    "listen": "0.0.0.0:8545",  # reachable through the Service, not loopback
    "log_format": "json",  # for log collectors
    "metrics_listen": "0.0.0.0:9090",  # /metrics apart from the JSON-RPC port
    "allowed_hosts": ["*"],  # clients use Service names the chart cannot know
    "audit_log": "-",  # stdout, where the pod's logs are collected
}
# The chart refuses to render without authentication: renders get API keys unless told not to.
WITH_AUTH: dict[str, Any] = {"apiKeysSecret": {"name": "signer-proxy-api-keys"}}

YAMLLINT = YamlLintConfig(
    "extends: default\n"
    "rules:\n"
    "  line-length: {max: 100}\n"
    "  document-start: disable\n"
    "  truthy: {check-keys: false}\n"
    "  comments: {min-spaces-from-content: 1}\n"
    "  indentation: {indent-sequences: whatever}\n"
)


def value_at(values: dict[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        assert isinstance(node, dict) and part in node, f".Values.{path} is not in values.yaml"
        node = node[part]
    return node


def leaf_paths(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, dict) and node:
        for key, child in node.items():
            yield from leaf_paths(child, f"{prefix}.{key}" if prefix else key)
    else:
        yield prefix


def template_references() -> set[str]:
    found: set[str] = set()
    for path in TEMPLATES.iterdir():
        found |= set(re.findall(r"\.Values\.([A-Za-z0-9_.]*[A-Za-z0-9_])", path.read_text()))
    return found


# --- schema -----------------------------------------------------------------------------------


def test_values_yaml_is_valid_against_the_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator(SCHEMA).validate(VALUES)


@pytest.mark.parametrize(
    ("override", "path"),
    [
        pytest.param({"config": {"kms_key": ["alias/a"]}}, "config", id="config-typo"),
        pytest.param({"config": {"max_batch": "lots"}}, "config.max_batch", id="config-type"),
        pytest.param({"config": {"log_format": "xml"}}, "config.log_format", id="log-format"),
        pytest.param({"config": {"listen": "8545"}}, "config.listen", id="listen-no-host"),
        pytest.param({"config": {"gas_margin": 0.5}}, "config.gas_margin", id="gas-margin"),
        pytest.param({"replicaCount": "two"}, "replicaCount", id="replicas-type"),
        pytest.param(
            {"serviceAccount": {"roleArn": "my-role"}}, "serviceAccount.roleArn", id="arn"
        ),
        pytest.param({"redis": {"url": "http://x"}}, "redis.url", id="redis-scheme"),
        pytest.param({"replicas": 2}, "", id="unknown-top-level-key"),
        pytest.param(
            {"config": {"chains": [{"name": "base"}]}}, "config.chains.0", id="chain-no-upstream"
        ),
        pytest.param(
            {"config": {"chains": [{"name": "Base", "upstream": "http://n"}]}},
            "config.chains.0.name",
            id="chain-name-upper-case",
        ),
        pytest.param(
            {"config": {"chains": [{"name": "8453", "upstream": "http://n"}]}},
            "config.chains.0.name",
            id="chain-name-digits",
        ),
        pytest.param(
            {"config": {"chains": [{"name": "b", "upstream": "http://n", "gas_margin": 0.5}]}},
            "config.chains.0.gas_margin",
            id="chain-gas-margin",
        ),
        pytest.param(
            {"config": {"chains": [{"name": "b", "upstream": "http://n", "listen": ":1"}]}},
            "config.chains.0",
            id="chain-process-setting",
        ),
    ],
)
def test_schema_refuses_wrong_values(override: dict[str, Any], path: str) -> None:
    values = json.loads(json.dumps(VALUES))
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(values.get(key), dict):
            values[key].update(value)
        else:
            values[key] = value
    errors = list(jsonschema.Draft7Validator(SCHEMA).iter_errors(values))
    assert errors
    assert any(".".join(map(str, e.absolute_path)) == path for e in errors), [
        (list(e.absolute_path), e.message) for e in errors
    ]


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def test_config_values_and_schema_are_the_settings_one_to_one() -> None:
    config_schema = SCHEMA["properties"]["config"]
    # `chains` is a setting of the file only (no flag, no environment): not in FIELDS
    settings = {*FIELDS, "chains"}
    assert set(VALUES["config"]) == settings, "values.config must list every setting"
    assert set(config_schema["properties"]) == settings
    assert VALUES["config"]["chains"] == []
    assert config_schema["additionalProperties"] is False
    for name, f in FIELDS.items():
        tp = field_type(name)
        expected = "array" if getattr(tp, "__origin__", None) is tuple else _JSON_TYPES[tp]
        assert config_schema["properties"][name]["type"] == expected, name
        default = f.default if not isinstance(f.default, tuple) else list(f.default)
        assert VALUES["config"][name] == CHART_DEFAULTS.get(name, default), name


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == __version__


# --- references between templates and values ---------------------------------------------


def test_every_template_value_reference_exists_in_values_yaml() -> None:
    references = template_references()
    assert len(references) > 30  # the regex finds them
    for reference in sorted(references):
        value_at(VALUES, reference)


def test_every_value_is_used_by_a_template() -> None:
    references = template_references()
    for path in leaf_paths(VALUES):
        assert any(path == r or path.startswith(r + ".") for r in references), (
            f"values.yaml has {path} but no template reads it"
        )


# --- YAML lint ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Chart.yaml", "values.yaml"])
def test_chart_yaml_files_pass_yamllint(name: str) -> None:
    problems = list(linter.run((CHART / name).read_text(), YAMLLINT))
    assert problems == [], [str(p) for p in problems]


# --- rendering --------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def renderer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    if go is None or not Path(GOPATH, "src/github.com/Masterminds/sprig").is_dir():
        pytest.fail("go and sprig not found: run `make tools` (Debian golang-go and sprig)")
    binary = tmp_path_factory.mktemp("chart_render") / "chart_render"
    cache = ROOT / ".tools" / "gocache"
    subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=ROOT / "tests" / "fixtures" / "chart_render",
        env={**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOCACHE": str(cache)},
        check=True,
        capture_output=True,
        timeout=300,
    )
    return binary


def render(
    renderer: Path, tmp_path: Path, values: dict[str, Any] | None = None, *, auth: bool = True
) -> str:
    """The manifests helm would print for `values` over values.yaml (with WITH_AUTH unless
    `auth` is false); RenderError on a render error."""
    args = [str(renderer), str(CHART)]
    if auth:
        values = {**WITH_AUTH, **(values or {})}
    if values is not None:
        override = tmp_path / f"override-{len(list(tmp_path.iterdir()))}.yaml"
        override.write_text(yaml.safe_dump(values))
        args.append(str(override))
    result = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise RenderError(result.stderr.strip())
    return result.stdout


class RenderError(Exception):
    pass


def manifests(text: str) -> dict[str, dict[str, Any]]:
    """Rendered documents by "Kind/name"."""
    docs = [d for d in yaml.safe_load_all(text) if d]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def container(docs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    pod = docs["Deployment/signer-proxy"]["spec"]["template"]["spec"]
    [main] = pod["containers"]
    return dict(main)


EVERYTHING_ON: dict[str, Any] = {
    "replicaCount": 2,
    "redis": {"existingSecret": {"name": "redis", "key": "url"}},
    "autoscaling": {"enabled": True},
    "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
    "networkPolicy": {
        "enabled": True,
        "ingressFrom": [{"podSelector": {"matchLabels": {"app": "wallet"}}}],
    },
    "grafanaDashboard": {"enabled": True},
    "upstreamSecret": {"name": "node-url", "key": "url"},
    "upstreamWsSecret": {"name": "node-ws-url", "key": "url"},
    "apiKeysSecret": {"name": "api-keys"},
    "adminTokenSecret": {"name": "admin-token"},
    "serviceAccount": {"roleArn": "arn:aws:iam::111122223333:role/signer-proxy"},
    "config": {"kms_keys": ["alias/treasury"], "metrics_listen": ""},
}


def test_default_render_is_a_hardened_deployment(renderer: Path, tmp_path: Path) -> None:
    text = render(renderer, tmp_path)
    docs = manifests(text)

    assert set(docs) == {
        "ConfigMap/signer-proxy",
        "Deployment/signer-proxy",
        "Service/signer-proxy",
        "ServiceAccount/signer-proxy",
        "PodDisruptionBudget/signer-proxy",
    }
    for doc in docs.values():
        assert doc["metadata"]["labels"]["app.kubernetes.io/version"] == __version__
    deployment = docs["Deployment/signer-proxy"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod = deployment["spec"]["template"]
    assert selector.items() <= pod["metadata"]["labels"].items()
    assert docs["Service/signer-proxy"]["spec"]["selector"] == selector
    assert deployment["spec"]["replicas"] == 1
    main = container(docs)
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    assert ports == {"http": 8545, "metrics": 9090}
    probe = {"port": "http", "scheme": "HTTP"}
    assert main["livenessProbe"]["httpGet"] == {"path": "/health", **probe}
    assert main["readinessProbe"]["httpGet"] == {"path": "/ready", **probe}
    assert main["startupProbe"]["httpGet"] == {"path": "/health", **probe}
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    pod_security = pod["spec"]["securityContext"]
    assert pod_security["runAsNonRoot"] is True
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"USER {pod_security['runAsUser']}:" in dockerfile  # the image's own user
    grace = pod["spec"]["terminationGracePeriodSeconds"]
    assert grace >= VALUES["preStopSleepSeconds"] + VALUES["config"]["shutdown_timeout"]
    assert pod["spec"]["automountServiceAccountToken"] is False
    assert {"name": "SIGNER_PROXY_CONFIG", "value": "/etc/signer-proxy/config.yaml"} in main["env"]
    api_keys = {"name": "SIGNER_PROXY_API_KEYS_FILE", "value": "/etc/signer-proxy/api-keys"}
    assert api_keys in main["env"]
    assert {m["mountPath"] for m in main["volumeMounts"]} >= {"/etc/signer-proxy/api-keys"}
    assert pod["metadata"]["annotations"]["checksum/config"]
    problems = list(linter.run(text, YAMLLINT))
    assert problems == [], [str(p) for p in problems]


def test_rendered_config_file_loads_as_the_values_say(renderer: Path, tmp_path: Path) -> None:
    config = {"kms_keys": ["alias/a", "alias/b"], "upstream": "http://node:8545"}
    docs = manifests(render(renderer, tmp_path, {"config": config}))
    path = tmp_path / "config.yaml"
    path.write_text(docs["ConfigMap/signer-proxy"]["data"]["config.yaml"])

    settings = load_settings({}, environ={}, config_file=str(path))

    expected = {**VALUES["config"], **config}
    assert settings == Settings(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in expected.items()}
    )
    assert settings.max_body_bytes == 5 * 1024 * 1024  # an integer, not helm's 5.24288e+06


def test_everything_on_render(renderer: Path, tmp_path: Path) -> None:
    text = render(renderer, tmp_path, EVERYTHING_ON)
    docs = manifests(text)

    assert {
        "HorizontalPodAutoscaler/signer-proxy",
        "ServiceMonitor/signer-proxy",
        "NetworkPolicy/signer-proxy",
        "ConfigMap/signer-proxy-dashboard",
    } <= set(docs)
    assert "replicas" not in docs["Deployment/signer-proxy"]["spec"]  # the HPA owns it
    main = container(docs)
    env = {e["name"]: e for e in main["env"]}
    assert env["SIGNER_PROXY_UPSTREAM"]["valueFrom"]["secretKeyRef"] == {
        "name": "node-url",
        "key": "url",
    }
    assert env["SIGNER_PROXY_UPSTREAM_WS"]["valueFrom"]["secretKeyRef"] == {
        "name": "node-ws-url",
        "key": "url",
    }
    assert env["SIGNER_PROXY_NONCE_STORE"]["valueFrom"]["secretKeyRef"]["name"] == "redis"
    mounts = {m["name"]: m for m in main["volumeMounts"]}
    assert mounts["api-keys"]["readOnly"] is True
    assert mounts["admin-token"] == {
        "name": "admin-token",
        "mountPath": "/etc/signer-proxy/admin",
        "readOnly": True,
    }
    sa = docs["ServiceAccount/signer-proxy"]
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith(
        ":role/signer-proxy"
    )
    assert [p["name"] for p in main["ports"]] == ["http"]  # metrics_listen "": one port
    monitor = docs["ServiceMonitor/signer-proxy"]
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    policy = docs["NetworkPolicy/signer-proxy"]["spec"]
    assert policy["ingress"][0]["from"] == [{"podSelector": {"matchLabels": {"app": "wallet"}}}]
    dashboard = docs["ConfigMap/signer-proxy-dashboard"]
    assert json.loads(dashboard["data"]["signer-proxy.json"]) == json.loads(
        (CHART / "dashboards" / "signer-proxy.json").read_text()
    )
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_metrics_port_follows_metrics_listen(renderer: Path, tmp_path: Path) -> None:
    values = {"serviceMonitor": {"enabled": True}, "config": {"metrics_listen": "0.0.0.0:9300"}}
    docs = manifests(render(renderer, tmp_path, values))

    ports = {p["name"]: p["containerPort"] for p in container(docs)["ports"]}
    service_ports = {
        p["name"]: p["targetPort"] for p in docs["Service/signer-proxy"]["spec"]["ports"]
    }
    assert ports["metrics"] == 9300
    assert service_ports == {"http": "http", "metrics": "metrics"}
    assert docs["ServiceMonitor/signer-proxy"]["spec"]["endpoints"][0]["port"] == "metrics"


def test_tracing_values_set_the_otel_environment(renderer: Path, tmp_path: Path) -> None:
    env_off = {e["name"] for e in container(manifests(render(renderer, tmp_path)))["env"]}
    assert not any(name.startswith("OTEL_") for name in env_off)
    values = {"tracing": {"otlpEndpoint": "http://collector:4318", "serviceName": "signer-eu"}}
    env = {
        e["name"]: e.get("value")
        for e in container(manifests(render(renderer, tmp_path, values)))["env"]
    }
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector:4318"
    assert env["OTEL_SERVICE_NAME"] == "signer-eu"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        pytest.param({"replicaCount": 3}, "needs the Redis nonce store", id="replicas-no-redis"),
        pytest.param(
            {"autoscaling": {"enabled": True}}, "needs the Redis nonce store", id="hpa-no-redis"
        ),
        pytest.param(
            {"config": {"listen": "127.0.0.1:8545"}}, "loopback address", id="loopback-listen"
        ),
    ],
)
def test_render_refuses_what_cannot_work(
    renderer: Path, tmp_path: Path, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(RenderError, match=message):
        render(renderer, tmp_path, values)


def test_render_refuses_no_authentication_unless_insecure_no_auth_says_so(
    renderer: Path, tmp_path: Path
) -> None:
    with pytest.raises(RenderError, match="no authentication: anyone reaching the Service"):
        render(renderer, tmp_path, auth=False)

    docs = manifests(render(renderer, tmp_path, {"config": {"insecure_no_auth": True}}, auth=False))
    config = yaml.safe_load(docs["ConfigMap/signer-proxy"]["data"]["config.yaml"])
    assert config["insecure_no_auth"] is True
    assert "SIGNER_PROXY_API_KEYS_FILE" not in {e["name"] for e in container(docs)["env"]}


def test_tls_secret_serves_https_with_client_certificates(renderer: Path, tmp_path: Path) -> None:
    values = {"tlsSecret": {"name": "proxy-tls", "clientCaKey": "ca.crt"}}
    docs = manifests(render(renderer, tmp_path, values, auth=False))  # mTLS is authentication

    main = container(docs)
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["SIGNER_PROXY_TLS_CERT_FILE"] == "/etc/signer-proxy/tls/tls.crt"
    assert env["SIGNER_PROXY_TLS_KEY_FILE"] == "/etc/signer-proxy/tls/tls.key"
    assert env["SIGNER_PROXY_TLS_CLIENT_CA_FILE"] == "/etc/signer-proxy/tls/ca.crt"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert main[probe]["httpGet"]["scheme"] == "HTTPS"
    mount = next(m for m in main["volumeMounts"] if m["name"] == "tls")
    assert "subPath" not in mount  # a subPath mount would never see a renewed certificate
    volumes = docs["Deployment/signer-proxy"]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "proxy-tls"}} in volumes


def test_policy_value_renders_a_policy_file_that_loads(renderer: Path, tmp_path: Path) -> None:
    from signer_proxy.access.policy import load_policy

    policy = {
        "defaults": {"chain_ids": [1], "max_value": "1.5 ether"},
        "clients": {"ci": {"read_only": True, "rate_limit": {"per_second": 5}}},
    }
    docs = manifests(render(renderer, tmp_path, {"policy": policy}))

    env = {e["name"]: e.get("value") for e in container(docs)["env"]}
    assert env["SIGNER_PROXY_POLICY_FILE"] == "/etc/signer-proxy/policy.yaml"
    path = tmp_path / "policy.yaml"
    path.write_text(docs["ConfigMap/signer-proxy"]["data"]["policy.yaml"])
    loaded = load_policy(str(path))
    assert loaded.defaults.max_value == 15 * 10**17
    assert loaded.clients["ci"].read_only is True


def test_renderer_fails_on_a_reference_to_a_missing_value(renderer: Path, tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "typo.yaml").write_text("x: {{ .Values.servce.port }}\n")
    override = tmp_path / "auth.yaml"
    override.write_text(yaml.safe_dump(WITH_AUTH))
    args = [str(renderer), str(chart), str(override)]
    result = subprocess.run(args, capture_output=True, text=True)
    assert result.returncode != 0
    assert "servce" in result.stderr


# --- the Grafana dashboard ----------------------------------------------------------------


def metric_labels() -> dict[str, set[str]]:
    """Exposed series names (histograms with _bucket/_count/_sum) → their label names."""
    labels: dict[str, set[str]] = {}
    for metric in vars(Metrics(process_collectors=False)).values():
        names = getattr(metric, "_labelnames", None)  # prometheus_client keeps them here
        if names is None:
            continue
        base = metric._name
        kind = metric._type
        if kind == "counter":
            labels[f"{base}_total"] = set(names)
        elif kind == "histogram":
            for suffix in ("_bucket", "_count", "_sum"):
                labels[base + suffix] = set(names) | ({"le"} if suffix == "_bucket" else set())
        else:
            labels[base] = set(names)
    return labels


def test_dashboard_queries_use_only_defined_metrics_and_labels() -> None:
    dashboard = json.loads((CHART / "dashboards" / "signer-proxy.json").read_text())
    known = metric_labels()
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 12
    used: set[str] = set()
    for expr in exprs:
        names = re.findall(r"\b(signer_proxy_[a-z_]+)", expr)
        assert names, expr
        for name in names:
            assert name in known, f"{name} in {expr!r} is not a metric signer-proxy exposes"
            used.add(name)
        for group in re.findall(r"by \(([^)]*)\)", expr):
            for label in (x.strip() for x in group.split(",")):
                assert any(label in known[n] for n in names), f"{label} in {expr!r}"
        for label in re.findall(r"(\w+)(?:=~|!~|!=|=)\"", expr):
            assert label == "job" or any(label in known[n] for n in names), expr
    # The panels the issue asks for: request rate, errors, sign latency, KMS throttling,
    # nonce resyncs.
    assert {
        "signer_proxy_requests_total",
        "signer_proxy_sign_duration_seconds_bucket",
        "signer_proxy_sign_errors_total",
        "signer_proxy_nonce_resyncs_total",
    } <= used
    assert any(
        "ThrottlingException" in p["title"] + p.get("description", "") for p in dashboard["panels"]
    )


def test_go_renderer_source_is_formatted() -> None:
    gofmt = shutil.which("gofmt")
    if gofmt is None:
        pytest.fail("gofmt not found: run `make tools`")
    result = subprocess.run(
        [gofmt, "-l", str(ROOT / "tests" / "fixtures" / "chart_render")],
        capture_output=True,
        text=True,
    )
    assert result.stdout == "", f"run gofmt -w on {result.stdout}"


# --- several chains (docs/chains.md) ----------------------------------------------------------


def test_schema_chain_entry_has_exactly_the_keys_an_entry_may_have() -> None:
    entry = SCHEMA["properties"]["config"]["properties"]["chains"]["items"]
    assert set(entry["properties"]) == set(CHAIN_ENTRY_KEYS)
    assert entry["additionalProperties"] is False
    assert entry["required"] == ["name", "upstream"]
    for name in CHAIN_SETTINGS:  # the same rules as the setting of the same name
        if name != "upstream":
            assert entry["properties"][name] == {"$ref": f"#/properties/config/properties/{name}"}


TWO_CHAINS: list[dict[str, Any]] = [
    {"name": "mainnet", "chain_id": 1, "upstream": "https://eth.example/rpc", "default": True},
    {
        "name": "base",
        "chain_id": 8453,
        "upstream": "https://base.example/rpc",
        "upstream_ws": "wss://base.example/ws",
        "upstream_headers": ["Authorization: env:BASE_TOKEN"],
        "gas_margin": 1.3,
        "keys": ["0x71C7656EC7ab88b098defB751B7401B5f6d8976F"],
    },
]


def test_rendered_config_file_with_two_chains_loads_into_two_chain_entries(
    renderer: Path, tmp_path: Path
) -> None:
    values = {"config": {"kms_keys": ["alias/a"], "chains": TWO_CHAINS}}
    merged = {**VALUES, "config": {**VALUES["config"], **values["config"]}}
    jsonschema.Draft7Validator(SCHEMA).validate(merged)
    docs = manifests(render(renderer, tmp_path, values))
    path = tmp_path / "config.yaml"
    path.write_text(docs["ConfigMap/signer-proxy"]["data"]["config.yaml"])

    settings = load_settings({}, environ={}, config_file=str(path))

    assert settings.chains == (
        ChainConfig("mainnet", 1, True, (), (("upstream", "https://eth.example/rpc"),)),
        ChainConfig(
            "base",
            8453,
            False,
            ("0x71c7656ec7ab88b098defb751b7401b5f6d8976f",),
            (
                ("upstream", "https://base.example/rpc"),
                ("upstream_ws", "wss://base.example/ws"),
                ("upstream_headers", ("Authorization: env:BASE_TOKEN",)),
                ("gas_margin", 1.3),
            ),
        ),
    )
    assert settings.upstream == ""
    assert settings.for_chain(settings.chains[1]).gas_margin == 1.3
    assert settings.kms_keys == ("alias/a",)


def test_rendered_config_file_without_chains_has_no_chains_key(
    renderer: Path, tmp_path: Path
) -> None:
    docs = manifests(render(renderer, tmp_path, {"config": {"upstream": "http://node:8545"}}))
    assert "chains" not in yaml.safe_load(docs["ConfigMap/signer-proxy"]["data"]["config.yaml"])


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"config": {"upstream": "http://node:8545"}}, id="upstream"),
        pytest.param({"upstreamSecret": {"name": "node-url", "key": "url"}}, id="upstream-secret"),
        pytest.param(
            {"upstreamWsSecret": {"name": "node-ws", "key": "url"}}, id="upstream-ws-secret"
        ),
    ],
)
def test_render_refuses_chains_beside_a_top_level_upstream(
    renderer: Path, tmp_path: Path, values: dict[str, Any]
) -> None:
    config = {**values.get("config", {}), "chains": TWO_CHAINS}
    with pytest.raises(RenderError, match=r"config\.chains is set, so each chain names its own"):
        render(renderer, tmp_path, {**values, "config": config})
