#!/usr/bin/env python3
"""Offline checks of Herald's deployment artifacts: deploy/ (Dockerfile, compose, collector and
Prometheus configs) and the Helm chart in helm/herald.

No Docker engine, cluster or network is needed. The chart is linted and rendered by Helm's own
engine (helm-python-sdk) for the default values, values-production.yaml and a no-autoscaling
variant; every rendered built-in object is validated against the Kubernetes 1.30 schemas
(kubernetes-validate, strict); custom resources (KEDA, Prometheus Operator) are checked for
shape. Every HERALD_* name the artifacts set must occur, quoted, in the Rust sources, so a
renamed setting cannot silently stop applying.

    .venv/bin/pip install -r tests/deploy/requirements.txt
    .venv/bin/python tests/deploy/validate.py

Prints one line per check and a summary line; exits 1 when a check failed.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import sys
import traceback
from pathlib import Path
from typing import Any, Callable

try:
    import kubernetes_validate
    import yaml
    from helm_python.chart import Chart, lint
except ImportError as exc:  # pragma: no cover - environment problem, not a check
    sys.exit(
        f"deploy: missing Python package ({exc.name}); "
        "run: pip install -r tests/deploy/requirements.txt"
    )

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = ROOT / "helm" / "herald"
KUBE_VERSION = "1.30"
RELEASE = "herald"
NAMESPACE = "herald"

# Settings the artifacts may use before the Rust sources read them: the metrics/health server
# address and the at-rest encryption key are being added to the services.
NOT_YET_IN_SOURCES = {"HERALD_METRICS_ADDR", "HERALD_SECRET_KEY"}
# Values that may hold passwords: never in a ConfigMap or a plain compose default outside dev.
SECRET_NAMES = {
    "HERALD_DATABASE_URL",
    "HERALD_AMQP_URL",
    "HERALD_REDIS_URL",
    "HERALD_ADMIN_TOKEN",
    "HERALD_SECRET_KEY",
}
SERVICES = ("ingest", "dispatcher", "ledger")
GRPC_PORTS = {"ingest": 50051, "ledger": 50052}
METRICS_PORTS = {"ingest": 9601, "ledger": 9602, "dispatcher": 9603, "console": 9604}
# herald-console: the tenant portal and operator pages over HTTP, a gRPC client of ingest and
# the ledger that holds no database, broker or Redis credentials.
CONSOLE_HTTP_PORT = 8080
CONNECTION_NAMES = {"HERALD_DATABASE_URL", "HERALD_AMQP_URL", "HERALD_REDIS_URL", "HERALD_ADMIN_TOKEN",
                    "HERALD_SECRET_KEY"}
# API groups whose kinds are CRDs: the schema validator does not know them.
CRD_GROUPS = {"keda.sh", "monitoring.coreos.com"}


class Failure(Exception):
    """A check found something wrong; the message says what and where."""


def expect(condition: Any, message: str) -> None:
    if not condition:
        raise Failure(message)


# --------------------------------------------------------------------------------------------
# Running checks


class Runner:
    def __init__(self) -> None:
        self.passed = 0
        self.failed: list[str] = []

    def check(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Failure as exc:
            self.failed.append(name)
            print(f"FAIL  {name}: {exc}")
        except Exception as exc:  # a crash in a check is a failure too, with its trace
            self.failed.append(name)
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            print(f"FAIL  {name}: unexpected {detail}")
        else:
            self.passed += 1
            print(f"ok    {name}")


# --------------------------------------------------------------------------------------------
# Shared helpers


def source_setting_names() -> set[str]:
    """Every quoted "HERALD_*" string in the Rust sources under crates/."""
    names: set[str] = set()
    for path in (ROOT / "crates").rglob("*.rs"):
        names.update(re.findall(r'"(HERALD_[A-Z0-9_]+)"', path.read_text(encoding="utf-8")))
    if not names:
        raise SystemExit("deploy: found no HERALD_* names under crates/: wrong repository root?")
    return names


KNOWN_NAMES = source_setting_names()


def check_names(names: set[str], where: str) -> None:
    unknown = sorted(n for n in names if n.startswith("HERALD_"))
    unknown = [n for n in unknown if n not in KNOWN_NAMES and n not in NOT_YET_IN_SOURCES]
    expect(
        not unknown,
        f"{where} sets {', '.join(unknown)}, which no Rust source under crates/ reads "
        "(typo or renamed setting?)",
    )


def parse_duration_ms(text: str) -> int:
    """The services' duration syntax (crates/core/src/schedule.rs): digits and ms|s|m|h; a bare
    number is milliseconds."""
    m = re.fullmatch(r"\s*(\d+)(ms|s|m|h)?\s*", text)
    if not m:
        raise Failure(f"{text!r} is not a duration (500ms, 30s, 5m, 1h)")
    factor = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[m.group(2) or "ms"]
    return int(m.group(1)) * factor


DURATIONS = {
    "HERALD_IDEMPOTENCY_TTL",
    "HERALD_SUBSCRIPTION_CACHE_TTL",
    "HERALD_DEFAULT_TIMEOUT",
    "HERALD_ENDPOINT_CACHE_TTL",
    "HERALD_DONE_TTL",
    "HERALD_SHUTDOWN_GRACE",
    "HERALD_LEDGER_BATCH_WAIT",
    "HERALD_STATS_WINDOW",
    "HERALD_DISABLE_AFTER_SPAN",
}
INTEGERS = {
    "HERALD_DATABASE_MAX_CONNECTIONS": None,
    "HERALD_MAX_PAYLOAD_BYTES": None,
    "HERALD_MAX_BATCH": None,
    "HERALD_MAX_ENDPOINTS_PER_TENANT": None,
    "HERALD_PUBLISH_CHANNELS": None,
    "HERALD_DISPATCHER_CONCURRENCY": None,
    "HERALD_MAX_RESPONSE_BYTES": None,
    "HERALD_LEDGER_BATCH": None,
    "HERALD_FAILING_AFTER_ATTEMPTS": None,
    "HERALD_DISABLE_AFTER_FAILURES": None,
    "HERALD_DISPATCHER_PREFETCH": 65535,  # u16
    "HERALD_LEDGER_PREFETCH": 65535,  # u16
}


def check_setting_values(env: dict[str, str], where: str) -> None:
    """The values a service would refuse at start: caught here instead of in a crash loop."""
    problems = []
    for name, value in env.items():
        if value is None or value == "" or not name.startswith("HERALD_"):
            continue
        value = str(value)
        try:
            if name in DURATIONS:
                parse_duration_ms(value)
            elif name == "HERALD_RETRY_SCHEDULE":
                for part in value.split(","):
                    parse_duration_ms(part)
            elif name in INTEGERS:
                expect(re.fullmatch(r"\d+", value.strip()), f"{value!r} is not a whole number")
                limit = INTEGERS[name]
                expect(limit is None or int(value) <= limit, f"{value} is above {limit}")
            elif name == "HERALD_QUEUE_TYPE":
                expect(value in ("quorum", "classic"), f"{value!r} is not quorum or classic")
            elif name == "HERALD_REQUIRE_HTTPS":
                expect(value in ("true", "false"), f"{value!r} is not true or false")
            elif name == "HERALD_LOG_FORMAT":
                expect(value.lower() in ("json", "pretty"), f"{value!r} is not json or pretty")
            elif name == "HERALD_ALLOW_NETWORKS":
                for cidr in value.split(","):
                    ipaddress.ip_network(cidr.strip(), strict=True)
        except (Failure, ValueError) as exc:
            problems.append(f"{name}: {exc}")
    batch, prefetch = env.get("HERALD_LEDGER_BATCH"), env.get("HERALD_LEDGER_PREFETCH")
    if batch and prefetch and batch.isdigit() and prefetch.isdigit():
        if not 1 <= int(batch) <= int(prefetch):
            problems.append("HERALD_LEDGER_BATCH must be between 1 and HERALD_LEDGER_PREFETCH")
    expect(not problems, f"{where}: " + "; ".join(problems))


def load_yaml(path: Path) -> Any:
    expect(path.is_file(), f"{path.relative_to(ROOT)} is missing")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise Failure(f"{path.relative_to(ROOT)} is not valid YAML: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Dockerfile and .dockerignore


def check_dockerfile() -> None:
    path = DEPLOY / "Dockerfile"
    expect(path.is_file(), "deploy/Dockerfile is missing")
    text = path.read_text(encoding="utf-8")
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    expect(stages[:1] == ["rust:1.95-bookworm"], f"builder stage is {stages[:1]}, want rust:1.95-bookworm")
    expect(stages[-1:] == ["debian:bookworm-slim"], f"runtime stage is {stages[-1:]}, want debian:bookworm-slim")
    expect("cargo build --release --locked --bins" in text, "no `cargo build --release --locked --bins`")
    expect(re.search(r"^USER\s+10001", text, re.M), "runtime does not switch to uid 10001")
    for binary in ("herald-ingest", "herald-dispatcher", "herald-ledger", "herald-console", "heraldctl"):
        expect(f"target/release/{binary}" in text, f"{binary} is not copied into the image")
    expect("/usr/local/bin" in text, "binaries do not go to /usr/local/bin")
    exposed = {int(p) for line in re.findall(r"^EXPOSE\s+(.+)$", text, re.M) for p in line.split()}
    want = {50051, 50052, CONSOLE_HTTP_PORT, 9601, 9602, 9603, 9604}
    expect(want <= exposed, f"EXPOSE lacks {sorted(want - exposed)}")
    expect("ca-certificates" in text, "runtime image lacks ca-certificates (HTTPS endpoints)")


def check_dockerignore() -> None:
    path = ROOT / ".dockerignore"
    expect(path.is_file(), ".dockerignore is missing at the repository root")
    lines = {l.strip() for l in path.read_text(encoding="utf-8").splitlines()}
    for entry in ("target/", ".venv/", ".git/"):
        expect(entry in lines or entry.rstrip("/") in lines, f".dockerignore does not exclude {entry}")


# --------------------------------------------------------------------------------------------
# docker-compose.yml


def compose_env(service: dict[str, Any]) -> dict[str, Any]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


def published_ports(service: dict[str, Any]) -> set[int]:
    ports = set()
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            ports.add(int(entry["published"]))
        else:
            ports.add(int(str(entry).split(":")[-2] if str(entry).count(":") else entry))
    return ports


def compose_checks(run: Runner) -> None:
    path = DEPLOY / "docker-compose.yml"
    doc: dict[str, Any] = {}

    def parse() -> None:
        nonlocal doc
        doc = load_yaml(path)
        expect(isinstance(doc, dict) and isinstance(doc.get("services"), dict), "no services mapping")

    run.check("compose: docker-compose.yml parses", parse)
    if not doc:
        return
    services: dict[str, dict[str, Any]] = doc["services"]
    herald = ("migrate", *SERVICES)

    def expected_services() -> None:
        want = {"postgres", "redis", "rabbitmq", "migrate", "ingest", "dispatcher", "ledger",
                "console", "receiver", "otel-collector", "prometheus"}
        missing = sorted(want - services.keys())
        expect(not missing, f"missing services: {', '.join(missing)}")
        images = {name: services[name].get("image", "") for name in ("postgres", "redis", "rabbitmq")}
        expect(images["postgres"] == "postgres:16", f"postgres image is {images['postgres']!r}")
        expect(images["redis"] == "redis:7", f"redis image is {images['redis']!r}")
        expect(images["rabbitmq"] == "rabbitmq:3.13-management", f"rabbitmq image is {images['rabbitmq']!r}")
        expect(str(services["otel-collector"].get("image", "")).startswith("otel/opentelemetry-collector"),
               "otel-collector does not run otel/opentelemetry-collector")

    def one_image() -> None:
        for name in (*herald, "console", "receiver"):
            build = services[name].get("build") or {}
            expect(build.get("context") == "..", f"{name}: build context is {build.get('context')!r}, want '..'")
            expect(build.get("dockerfile") == "deploy/Dockerfile", f"{name}: dockerfile is {build.get('dockerfile')!r}")
            expect(services[name].get("image") == services["ingest"].get("image"),
                   f"{name} does not share the ingest image tag")
            context = (DEPLOY / build["context"]).resolve()
            expect((context / build["dockerfile"]).is_file(), f"{name}: build refers to a missing Dockerfile")

    def ports() -> None:
        want = {"ingest": 50051, "ledger": 50052, "console": CONSOLE_HTTP_PORT, "rabbitmq": 15672,
                "prometheus": 9090}
        for name, port in want.items():
            expect(port in published_ports(services[name]), f"{name} does not publish port {port}")
        expect(not published_ports(services["dispatcher"]),
               "dispatcher publishes a host port: `--scale dispatcher=N` would collide")

    def healthchecks() -> None:
        for name in ("postgres", "redis", "rabbitmq"):
            test = (services[name].get("healthcheck") or {}).get("test")
            expect(test, f"{name} has no healthcheck")

    def migrate() -> None:
        command = services["migrate"].get("command")
        command = command if isinstance(command, list) else str(command).split()
        expect(command == ["herald-ingest", "migrate"], f"migrate runs {command}")
        expect(str(services["migrate"].get("restart", "no")) == "no", "migrate must not restart")
        for name in SERVICES:
            deps = services[name].get("depends_on") or {}
            expect(isinstance(deps, dict), f"{name}: depends_on needs conditions")
            cond = (deps.get("migrate") or {}).get("condition")
            expect(cond == "service_completed_successfully",
                   f"{name} does not wait for migrate to complete (condition {cond!r})")
            for infra in ("postgres", "rabbitmq", "redis"):
                cond = (deps.get(infra) or {}).get("condition")
                expect(cond == "service_healthy", f"{name} does not wait for {infra} to be healthy")

    def env_names() -> None:
        for name, service in services.items():
            check_names(set(compose_env(service)), f"compose service {name}")

    def env_values() -> None:
        for name in herald:
            check_setting_values({k: v for k, v in compose_env(services[name]).items()}, name)

    def listen_addresses() -> None:
        for name in SERVICES:
            env = compose_env(services[name])
            expect(env.get("HERALD_METRICS_ADDR") == f"0.0.0.0:{METRICS_PORTS[name]}",
                   f"{name}: HERALD_METRICS_ADDR is {env.get('HERALD_METRICS_ADDR')!r}")
            expect(str(env.get("HERALD_LOG_FORMAT")) == "json", f"{name}: logs are not json")
            expect(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") == "http://otel-collector:4317",
                   f"{name}: OTEL_EXPORTER_OTLP_ENDPOINT is {env.get('OTEL_EXPORTER_OTLP_ENDPOINT')!r}")
            expect(env.get("OTEL_SERVICE_NAME") == f"herald-{name}", f"{name}: OTEL_SERVICE_NAME")
        expect(compose_env(services["ingest"]).get("HERALD_INGEST_ADDR") == "0.0.0.0:50051",
               "ingest does not listen on 0.0.0.0:50051")
        expect(compose_env(services["ledger"]).get("HERALD_LEDGER_ADDR") == "0.0.0.0:50052",
               "ledger does not listen on 0.0.0.0:50052")

    def secrets_and_networks() -> None:
        for name in ("ingest", "dispatcher"):
            allow = str(compose_env(services[name]).get("HERALD_ALLOW_NETWORKS") or "")
            expect("172.16.0.0/12" in allow.split(","),
                   f"{name}: HERALD_ALLOW_NETWORKS lacks 172.16.0.0/12 (the sample receiver is unreachable)")
        for name in herald:
            env = compose_env(services[name])
            for var in ("HERALD_DATABASE_URL", "HERALD_AMQP_URL", "HERALD_REDIS_URL"):
                expect(env.get(var), f"{name}: {var} is not set")
            expect(urlhost(env["HERALD_DATABASE_URL"]) == "postgres", f"{name}: database host is not postgres")
            expect(urlhost(env["HERALD_AMQP_URL"]) == "rabbitmq", f"{name}: broker host is not rabbitmq")
            expect(urlhost(env["HERALD_REDIS_URL"]) == "redis", f"{name}: redis host is not redis")

    def graceful_stop() -> None:
        env = compose_env(services["dispatcher"])
        grace = parse_duration_ms(str(env.get("HERALD_SHUTDOWN_GRACE") or "25s"))
        stop = parse_duration_ms(str(services["dispatcher"].get("stop_grace_period", "10s")))
        expect(stop > grace, f"dispatcher stop_grace_period {stop} ms is not above HERALD_SHUTDOWN_GRACE {grace} ms")

    def receiver() -> None:
        command = services["receiver"].get("command") or []
        expect(command[:2] == ["heraldctl", "listen"] and "--port" in command,
               f"receiver runs {command}, want heraldctl listen --port ...")
        env = compose_env(services["receiver"])
        expect("HERALD_WEBHOOK_SECRET" in env, "receiver has no HERALD_WEBHOOK_SECRET to verify with")

    run.check("compose: expected services and images", expected_services)
    run.check("compose: Herald services share one image built from deploy/Dockerfile", one_image)
    run.check("compose: published ports", ports)
    run.check("compose: infrastructure healthchecks", healthchecks)
    run.check("compose: migrate one-shot gates ingest, dispatcher, ledger", migrate)
    run.check("compose: every HERALD_* name exists in the Rust sources", env_names)
    run.check("compose: setting values parse as the services parse them", env_values)
    run.check("compose: listen addresses, json logs, OTLP endpoint", listen_addresses)
    run.check("compose: connection URLs and HERALD_ALLOW_NETWORKS", secrets_and_networks)
    run.check("compose: dispatcher stop grace exceeds HERALD_SHUTDOWN_GRACE", graceful_stop)
    run.check("compose: sample receiver", receiver)

    def console() -> None:
        svc = services["console"]
        command = svc.get("command")
        expect(command == ["herald-console"], f"console runs {command}")
        env = compose_env(svc)
        expect(env.get("HERALD_CONSOLE_ADDR") == f"0.0.0.0:{CONSOLE_HTTP_PORT}",
               f"console: HERALD_CONSOLE_ADDR is {env.get('HERALD_CONSOLE_ADDR')!r}")
        expect(env.get("HERALD_METRICS_ADDR") == f"0.0.0.0:{METRICS_PORTS['console']}",
               f"console: HERALD_METRICS_ADDR is {env.get('HERALD_METRICS_ADDR')!r}")
        expect(env.get("HERALD_CONSOLE_INGEST_URL") == "http://ingest:50051", "console does not call ingest:50051")
        expect(env.get("HERALD_CONSOLE_LEDGER_URL") == "http://ledger:50052", "console does not call ledger:50052")
        leaked = sorted(CONNECTION_NAMES & set(env))
        expect(not leaked, f"console gets credentials it does not use: {', '.join(leaked)}")
        public = str(env.get("HERALD_CONSOLE_PUBLIC_URL") or "")
        expect(f":{CONSOLE_HTTP_PORT}" in public,
               f"console: HERALD_CONSOLE_PUBLIC_URL {public!r} is not the published port")
        ingest_url = str(compose_env(services["ingest"]).get("HERALD_CONSOLE_URL") or "")
        expect(ingest_url == public, f"ingest's HERALD_CONSOLE_URL {ingest_url!r} differs from the console's "
                                     f"public URL {public!r} (portal links would open elsewhere)")
        health = dict(part.split("=", 1) for part in str(env.get("HERALD_CONSOLE_HEALTH_URLS", "")).split(",") if "=" in part)
        for name in SERVICES:
            expect(health.get(name) == f"http://{name}:{METRICS_PORTS[name]}/readyz",
                   f"console: health URL of {name} is {health.get(name)!r}")
        deps = svc.get("depends_on") or {}
        expect({"ingest", "ledger"} <= set(deps), "console does not start after ingest and the ledger")

    run.check("compose: console wiring (ports, ingest and ledger URLs, no credentials)", console)

    def otel_config() -> None:
        mounts = [v for v in services["otel-collector"].get("volumes") or [] if "otel-collector.yaml" in str(v)]
        expect(mounts, "otel-collector does not mount deploy/otel-collector.yaml")
        cfg = load_yaml(DEPLOY / "otel-collector.yaml")
        grpc = cfg["receivers"]["otlp"]["protocols"]["grpc"]
        expect(str(grpc.get("endpoint", "")).endswith(":4317"), "OTLP gRPC receiver is not on 4317")
        expect(not str(grpc["endpoint"]).startswith(("localhost", "127.")),
               "OTLP receiver listens on loopback only: other containers cannot reach it")
        expect("debug" in cfg["exporters"], "no debug exporter")
        pipelines = cfg["service"]["pipelines"]
        expect("traces" in pipelines, "no traces pipeline")
        for pname, pipeline in pipelines.items():
            for kind in ("receivers", "processors", "exporters"):
                for component in pipeline.get(kind, []):
                    expect(component in (cfg.get(kind) or {}),
                           f"pipeline {pname} uses undefined {kind[:-1]} {component}")

    def prometheus_config() -> None:
        mounts = [v for v in services["prometheus"].get("volumes") or [] if "prometheus.yml" in str(v)]
        expect(mounts, "prometheus does not mount deploy/prometheus.yml")
        cfg = load_yaml(DEPLOY / "prometheus.yml")
        targets = set()
        for job in cfg["scrape_configs"]:
            path_ = job.get("metrics_path", "/metrics")
            for sc in job.get("static_configs", []):
                targets.update((t, path_) for t in sc["targets"])
            for sd in job.get("dns_sd_configs", []):
                targets.update((f"{n}:{sd['port']}", path_) for n in sd["names"])
        for name, port in METRICS_PORTS.items():
            expect((f"{name}:{port}", "/metrics") in targets, f"Prometheus does not scrape {name}:{port}/metrics")

    run.check("compose: otel-collector.yaml parses and wires OTLP gRPC to debug", otel_config)
    run.check("compose: prometheus.yml parses and scrapes the three services", prometheus_config)


def urlhost(url: str) -> str:
    m = re.match(r"^[a-z0-9+]+://(?:[^@/]*@)?([^:/?]+)", str(url))
    return m.group(1) if m else ""


# --------------------------------------------------------------------------------------------
# Helm chart


def render(values: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every object the chart renders with `values` (over the chart defaults), hooks included."""
    with Chart.load(CHART) as chart:
        rendered = chart.render(values=values, name=RELEASE, namespace=NAMESPACE)
    docs = []
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue  # NOTES.txt, helpers
        for doc in yaml.safe_load_all(text):
            if doc:
                doc.setdefault("_template", template)
                docs.append(doc)
    return docs


def kinds(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind]


def component(doc: dict[str, Any]) -> str:
    return (doc.get("metadata", {}).get("labels") or {}).get("app.kubernetes.io/component", "")


def is_hook(doc: dict[str, Any]) -> bool:
    return "helm.sh/hook" in (doc.get("metadata", {}).get("annotations") or {})


def deployments_of(docs: list[dict[str, Any]], console: bool) -> dict[str, dict[str, Any]]:
    found = {component(d): d for d in kinds(docs, "Deployment")}
    want = [*SERVICES, "console"] if console else list(SERVICES)
    expect(set(found) == set(want), f"Deployments for {sorted(found)}, want {want}")
    return found


def container(deploy: dict[str, Any]) -> dict[str, Any]:
    return deploy["spec"]["template"]["spec"]["containers"][0]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def chart_checks(run: Runner, label: str, values: dict[str, Any] | None, expect_scaling: dict[str, bool],
                 lint_it: bool = True) -> None:
    tag = f"helm[{label}]"
    docs: list[dict[str, Any]] = []
    want_console = ((values or {}).get("console") or {}).get("enabled", True)

    def deployments(d: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return deployments_of(d, want_console)

    if lint_it:
        def do_lint() -> None:
            report = lint(str(CHART), values, kube_version=f"v{KUBE_VERSION}.0")
            problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
            problems = [f"{m.get('path')}: {m.get('error')}" for m in problems] + list(report.get("errors") or [])
            expect(not problems, "; ".join(problems))

        run.check(f"{tag}: helm lint (no warnings or errors)", do_lint)

    def do_render() -> None:
        nonlocal docs
        docs = render(values)
        expect(docs, "rendered nothing")

    run.check(f"{tag}: renders", do_render)
    if not docs:
        return

    def schemas() -> None:
        problems = []
        for doc in docs:
            body = {k: v for k, v in doc.items() if k != "_template"}
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            group = str(doc.get("apiVersion", "")).split("/")[0] if "/" in str(doc.get("apiVersion", "")) else ""
            if group in CRD_GROUPS:
                # Custom resource: the validator has no schema; check the envelope.
                for field in ("apiVersion", "kind", "metadata", "spec"):
                    if not body.get(field):
                        problems.append(f"{name}: no {field}")
                if not body.get("metadata", {}).get("name"):
                    problems.append(f"{name}: no metadata.name")
                continue
            try:
                kubernetes_validate.validate(body, KUBE_VERSION, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.path)
                problems.append(f"{name} ({doc['_template']}): {exc.message} at {path or '<root>'}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                problems.append(f"{name}: {exc.message}")
        expect(not problems, "; ".join(problems))

    run.check(f"{tag}: built-in objects valid for Kubernetes {KUBE_VERSION} (strict), CRDs well-formed", schemas)

    secret_name = ((values or {}).get("secret") or {}).get("existingSecret") or ""
    chart_secrets = [d for d in kinds(docs, "Secret") if not is_hook(d)]
    configmaps = kinds(docs, "ConfigMap")

    def probes_and_pods() -> None:
        for name, deploy in deployments(docs).items():
            pod = deploy["spec"]["template"]["spec"]
            c = container(deploy)
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            expect(ports.get("metrics") == METRICS_PORTS[name], f"{name}: metrics port {ports.get('metrics')}")
            if name in GRPC_PORTS:
                expect(ports.get("grpc") == GRPC_PORTS[name], f"{name}: grpc port {ports.get('grpc')}")
            for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
                get = (c.get(probe) or {}).get("httpGet") or {}
                expect(get.get("path") == path and get.get("port") in ("metrics", METRICS_PORTS[name]),
                       f"{name}: {probe} is {get or 'missing'}, want GET {path} on the metrics port")
            expect(c.get("command") == [f"herald-{name}"], f"{name}: command {c.get('command')}")
            res = c.get("resources") or {}
            expect((res.get("requests") or {}).get("cpu") and (res.get("limits") or {}).get("memory"),
                   f"{name}: needs a CPU request and a memory limit")
            sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
            expect(sc.get("readOnlyRootFilesystem") is True, f"{name}: root filesystem is writable")
            expect(sc.get("allowPrivilegeEscalation") is False, f"{name}: privilege escalation allowed")
            expect((sc.get("runAsNonRoot") or psc.get("runAsNonRoot")) is True, f"{name}: may run as root")
            uid = sc.get("runAsUser", psc.get("runAsUser"))
            expect(uid == 10001, f"{name}: runs as uid {uid}, the image's user is 10001")
            expect(isinstance(pod.get("terminationGracePeriodSeconds"), int),
                   f"{name}: no terminationGracePeriodSeconds")

    run.check(f"{tag}: Deployments: ports, /livez and /readyz probes, resources, non-root read-only", probes_and_pods)

    def listen_env() -> None:
        for name, deploy in deployments(docs).items():
            env = {e["name"]: e.get("value") for e in container(deploy).get("env", [])}
            expect(env.get("HERALD_METRICS_ADDR") == f"0.0.0.0:{METRICS_PORTS[name]}",
                   f"{name}: HERALD_METRICS_ADDR is {env.get('HERALD_METRICS_ADDR')!r}")
            if name == "ingest":
                expect(env.get("HERALD_INGEST_ADDR") == "0.0.0.0:50051", "ingest: HERALD_INGEST_ADDR")
            if name == "ledger":
                expect(env.get("HERALD_LEDGER_ADDR") == "0.0.0.0:50052", "ledger: HERALD_LEDGER_ADDR")
            expect(env.get("OTEL_SERVICE_NAME") == f"herald-{name}", f"{name}: OTEL_SERVICE_NAME")

    run.check(f"{tag}: listen addresses are 0.0.0.0 on the declared ports", listen_env)

    def config_and_secret_wiring() -> None:
        expect(len(configmaps) == 1, f"{len(configmaps)} ConfigMaps, want 1")
        cm_name = configmaps[0]["metadata"]["name"]
        if secret_name:
            expect(not chart_secrets, f"existingSecret set but the chart still renders Secret "
                                      f"{[s['metadata']['name'] for s in chart_secrets]}")
            want_secret = secret_name
        else:
            expect(len(chart_secrets) == 1, f"{len(chart_secrets)} release Secrets, want 1")
            data = chart_secrets[0].get("data") or {}
            for key in ("HERALD_DATABASE_URL", "HERALD_AMQP_URL", "HERALD_REDIS_URL"):
                expect(key in data, f"Secret lacks {key}")
                base64.b64decode(data[key], validate=True)
            want_secret = chart_secrets[0]["metadata"]["name"]
        for name, deploy in deployments(docs).items():
            if name == "console":
                continue  # no shared settings or credentials: see console_wiring
            refs = container(deploy).get("envFrom") or []
            cms = [r["configMapRef"]["name"] for r in refs if "configMapRef" in r]
            secrets = [r["secretRef"]["name"] for r in refs if "secretRef" in r]
            expect(cms == [cm_name], f"{name}: envFrom ConfigMaps {cms}, want [{cm_name}]")
            expect(secrets == [want_secret], f"{name}: envFrom Secrets {secrets}, want [{want_secret}]")

    run.check(f"{tag}: pods load the ConfigMap and the {'existing' if secret_name else 'chart'} Secret",
              config_and_secret_wiring)

    def configmap_names() -> None:
        data = configmaps[0].get("data") or {}
        leaked = sorted(SECRET_NAMES & data.keys())
        expect(not leaked, f"ConfigMap carries secrets: {', '.join(leaked)}")
        check_names(set(data), "ConfigMap")
        env_names: set[str] = set()
        for doc in kinds(docs, "Deployment") + kinds(docs, "Job"):
            for c in doc["spec"]["template"]["spec"]["containers"]:
                env_names.update(e["name"] for e in c.get("env", []))
        check_names(env_names, "container env")
        if not secret_name:
            check_names(set(chart_secrets[0].get("data") or {}), "Secret")

    run.check(f"{tag}: HERALD_* names in ConfigMap, Secret and env exist in the Rust sources", configmap_names)

    def config_values() -> None:
        data = dict(configmaps[0].get("data") or {})
        check_setting_values(data, "ConfigMap")
        for name, deploy in deployments(docs).items():
            env = {e["name"]: e.get("value") for e in container(deploy).get("env", []) if "value" in e}
            check_setting_values({**data, **env}, f"{name} env")

    run.check(f"{tag}: setting values parse as the services parse them", config_values)

    def grace() -> None:
        data = configmaps[0].get("data") or {}
        deploy = deployments(docs)["dispatcher"]
        env = {e["name"]: e.get("value") for e in container(deploy).get("env", [])}
        shutdown = parse_duration_ms(env.get("HERALD_SHUTDOWN_GRACE") or data.get("HERALD_SHUTDOWN_GRACE") or "25s")
        tgps = deploy["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] * 1000
        expect(tgps > shutdown, f"dispatcher terminationGracePeriodSeconds ({tgps} ms) is not above "
                                f"HERALD_SHUTDOWN_GRACE ({shutdown} ms)")

    run.check(f"{tag}: dispatcher termination grace exceeds HERALD_SHUTDOWN_GRACE", grace)

    def services() -> None:
        pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments(docs).items()}
        by_component = {component(s): s for s in kinds(docs, "Service")}
        for name in SERVICES:
            svc = by_component.get(name)
            expect(svc, f"no Service for {name}")
            expect(matches(svc["spec"].get("selector") or {}, pods[name]), f"{name} Service selects no {name} pod")
            ports = {p["name"]: p for p in svc["spec"]["ports"]}
            expect(ports.get("metrics", {}).get("port") == METRICS_PORTS[name], f"{name} Service: no metrics port")
            if name in GRPC_PORTS:
                expect(ports.get("grpc", {}).get("port") == GRPC_PORTS[name], f"{name} Service: no gRPC port")
                expect(ports["grpc"].get("targetPort") in ("grpc", GRPC_PORTS[name]), f"{name} Service: gRPC target")

    run.check(f"{tag}: Services expose ingest and ledger gRPC and every metrics port", services)

    def pdbs() -> None:
        pods = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in deployments(docs).items()}
        found = {component(p): p for p in kinds(docs, "PodDisruptionBudget")}
        for name in SERVICES:
            expect(name in found, f"no PodDisruptionBudget for {name}")
            sel = found[name]["spec"]["selector"].get("matchLabels") or {}
            expect(matches(sel, pods[name]), f"{name} PodDisruptionBudget selects no {name} pod")

    run.check(f"{tag}: a PodDisruptionBudget per service", pdbs)

    def console_wiring() -> None:
        cm = configmaps[0].get("data") or {}
        if not want_console:
            expect("HERALD_CONSOLE_URL" not in cm, "console disabled, yet ingest gets HERALD_CONSOLE_URL")
            expect(not [s for s in kinds(docs, "Service") if component(s) == "console"], "console Service rendered")
            return
        deploy = deployments(docs)["console"]
        c = container(deploy)
        expect(not c.get("envFrom"), "console loads the shared ConfigMap/Secret (connection URLs it does not use)")
        env = {e["name"]: e for e in c.get("env", [])}
        value = lambda n: (env.get(n) or {}).get("value")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        expect(ports.get("http") == CONSOLE_HTTP_PORT, f"console: http port {ports.get('http')}")
        expect(value("HERALD_CONSOLE_ADDR") == f"0.0.0.0:{CONSOLE_HTTP_PORT}", "console: HERALD_CONSOLE_ADDR")
        svcs = {component(s): s for s in kinds(docs, "Service")}
        for name, port in GRPC_PORTS.items():
            want = f"http://{svcs[name]['metadata']['name']}:{port}"
            got = value(f"HERALD_CONSOLE_{name.upper()}_URL")
            expect(got == want, f"console: HERALD_CONSOLE_{name.upper()}_URL is {got!r}, want {want!r}")
        health = dict(p.split("=", 1) for p in str(value("HERALD_CONSOLE_HEALTH_URLS") or "").split(",") if "=" in p)
        for name in SERVICES:
            want = f"http://{svcs[name]['metadata']['name']}:{METRICS_PORTS[name]}/readyz"
            expect(health.get(name) == want, f"console: health URL of {name} is {health.get(name)!r}, want {want!r}")
        public = value("HERALD_CONSOLE_PUBLIC_URL")
        expect(public and cm.get("HERALD_CONSOLE_URL") == public,
               f"ingest's HERALD_CONSOLE_URL {cm.get('HERALD_CONSOLE_URL')!r} differs from the console's public URL {public!r}")
        ref = ((env.get("HERALD_CONSOLE_SECRET") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        secret = secret_name or (chart_secrets[0]["metadata"]["name"] if chart_secrets else None)
        expect(ref.get("name") == secret and ref.get("key") == "HERALD_CONSOLE_SECRET",
               f"console: HERALD_CONSOLE_SECRET is not read from Secret {secret}")
        svc = svcs.get("console")
        expect(svc, "no Service for the console")
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        expect(matches(svc["spec"].get("selector") or {}, labels), "console Service selects no console pod")
        sports = {p["name"]: p for p in svc["spec"]["ports"]}
        expect(sports.get("http", {}).get("port") == CONSOLE_HTTP_PORT, "console Service: no http port")
        expect(sports.get("metrics", {}).get("port") == METRICS_PORTS["console"], "console Service: no metrics port")

    run.check(f"{tag}: console {'wired to ingest, the ledger and its Secret key' if want_console else 'absent'}",
              console_wiring)

    def migrate_hook() -> None:
        jobs = kinds(docs, "Job")
        expect(len(jobs) == 1, f"{len(jobs)} Jobs, want the migration hook")
        job = jobs[0]
        ann = job["metadata"].get("annotations") or {}
        hooks = set(str(ann.get("helm.sh/hook", "")).split(","))
        expect({"pre-install", "pre-upgrade"} <= hooks, f"migration hook is {ann.get('helm.sh/hook')!r}")
        expect(ann.get("helm.sh/hook-delete-policy"), "migration Job has no hook-delete-policy")
        c = job["spec"]["template"]["spec"]["containers"][0]
        expect(c.get("command") == ["herald-ingest", "migrate"], f"migration runs {c.get('command')}")
        env = {e["name"]: e for e in c.get("env", [])}
        ref = ((env.get("HERALD_DATABASE_URL") or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
        expect(ref.get("key") == "HERALD_DATABASE_URL", "migration does not read HERALD_DATABASE_URL from a Secret")
        job_weight = int(ann.get("helm.sh/hook-weight", "0"))
        if secret_name:
            expect(ref.get("name") == secret_name, f"migration reads Secret {ref.get('name')}, want {secret_name}")
        else:
            # Hooks run before release objects exist: the URL must come from a hook Secret that
            # Helm creates first (lower weight) for the same hook events.
            hook_secrets = {s["metadata"]["name"]: s for s in kinds(docs, "Secret") if is_hook(s)}
            secret = hook_secrets.get(ref.get("name"))
            expect(secret, f"migration reads Secret {ref.get('name')!r}, which is not a hook Secret "
                           "(the release Secret does not exist yet at pre-install)")
            sann = secret["metadata"]["annotations"]
            expect(hooks <= set(sann["helm.sh/hook"].split(",")), "hook Secret misses the Job's hook events")
            expect(int(sann.get("helm.sh/hook-weight", "0")) < job_weight, "hook Secret is not created before the Job")
            expect("HERALD_DATABASE_URL" in (secret.get("data") or {}), "hook Secret lacks HERALD_DATABASE_URL")
        spec = job["spec"]["template"]["spec"]
        expect(spec.get("restartPolicy") in ("Never", "OnFailure"), "migration pod restartPolicy")
        sa = spec.get("serviceAccountName")
        chart_sas = {s["metadata"]["name"] for s in kinds(docs, "ServiceAccount") if not is_hook(s)}
        expect(sa not in chart_sas, f"migration uses ServiceAccount {sa}, created only after pre-install hooks")
        expect(not any("configMapRef" in r for r in c.get("envFrom") or []),
               "migration loads the release ConfigMap, which does not exist yet at pre-install")

    run.check(f"{tag}: migration Job is a pre-install/pre-upgrade hook that can start", migrate_hook)

    def scaling() -> None:
        deploys = deployments(docs)
        hpa_for = {}
        for hpa in kinds(docs, "HorizontalPodAutoscaler"):
            target = hpa["spec"]["scaleTargetRef"]["name"]
            owner = [n for n, d in deploys.items() if d["metadata"]["name"] == target]
            expect(owner, f"HPA {hpa['metadata']['name']} targets unknown Deployment {target}")
            metrics = hpa["spec"].get("metrics") or []
            expect(any((m.get("resource") or {}).get("name") == "cpu" for m in metrics),
                   f"HPA for {owner[0]} does not scale on CPU")
            hpa_for[owner[0]] = hpa
        scaled = kinds(docs, "ScaledObject")
        got = {
            "ingest_hpa": "ingest" in hpa_for,
            "dispatcher_hpa": "dispatcher" in hpa_for,
            "scaled_object": bool(scaled),
        }
        expect("ledger" not in hpa_for, "the ledger must not autoscale")
        want = {k: expect_scaling[k] for k in got}
        expect(got == want, f"autoscaling objects {got}, want {want}")
        if scaled:
            so = scaled[0]
            expect(len(scaled) == 1, "more than one ScaledObject")
            expect(so["spec"]["scaleTargetRef"]["name"] == deploys["dispatcher"]["metadata"]["name"],
                   "ScaledObject does not target the dispatcher Deployment")
            cm = configmaps[0].get("data") or {}
            prefix = cm.get('HERALD_AMQP_PREFIX') or 'herald'
            # The 8 work shards, fresh, returning and bulk, and the legacy queue (crates/broker
            # WORK_SHARDS), one trigger each.
            want_queues = ([f"{prefix}.deliveries.work.{s}" for s in range(8)]
                           + [f"{prefix}.deliveries.again.{s}" for s in range(8)]
                           + [f"{prefix}.deliveries.bulk.{s}" for s in range(8)]
                           + [f"{prefix}.deliveries.work"])
            triggers = so["spec"]["triggers"]
            got_queues = [t["metadata"].get("queueName") for t in triggers]
            expect(got_queues == want_queues, f"trigger queues {got_queues}, want {want_queues}")
            for trig in triggers:
                expect(trig["type"] == "rabbitmq", f"trigger type {trig['type']}")
                expect(trig["metadata"].get("mode") == "QueueLength", "trigger does not scale on queue length")
            trig = triggers[0]
            auth_name = (trig.get("authenticationRef") or {}).get("name")
            auths = {a["metadata"]["name"]: a for a in kinds(docs, "TriggerAuthentication")}
            expect(auth_name in auths, f"trigger authentication {auth_name!r} is not rendered")
            refs = auths[auth_name]["spec"]["secretTargetRef"]
            secret_names = {secret_name} if secret_name else {s["metadata"]["name"] for s in chart_secrets}
            expect(any(r["parameter"] == "host" and r["name"] in secret_names for r in refs),
                   "TriggerAuthentication does not read the broker URL from the Herald Secret")
        for name, deploy in deploys.items():
            owned = name in hpa_for or (name == "dispatcher" and scaled)
            has = "replicas" in deploy["spec"]
            expect(owned != has, f"{name}: replicas {'set although autoscaled' if has else 'missing'}")
            if owned:
                cpu = (container(deploy).get("resources") or {}).get("requests", {}).get("cpu")
                expect(cpu or name not in hpa_for, f"{name}: CPU HPA without a CPU request")

    run.check(f"{tag}: autoscaling objects {sorted(k for k, v in expect_scaling.items() if v) or 'none'}", scaling)

    def service_monitor() -> None:
        monitors = kinds(docs, "ServiceMonitor")
        expect(bool(monitors) == expect_scaling["service_monitor"],
               f"{len(monitors)} ServiceMonitors, want {'one' if expect_scaling['service_monitor'] else 'none'}")
        for sm in monitors:
            sel = sm["spec"]["selector"].get("matchLabels") or {}
            selected = {component(s) for s in kinds(docs, "Service") if matches(sel, s["metadata"]["labels"])}
            expect(set(SERVICES) <= selected, f"ServiceMonitor selects only {sorted(selected)}")
            ports = {e.get("port") for e in sm["spec"]["endpoints"]}
            expect("metrics" in ports, "ServiceMonitor does not scrape the metrics port")

    run.check(f"{tag}: ServiceMonitor {'present' if expect_scaling['service_monitor'] else 'absent'}", service_monitor)


def chart_refuses_secrets_in_config() -> None:
    try:
        render({"config": {"HERALD_DATABASE_URL": "postgres://u:p@db/herald"}})
    except Exception as exc:  # HelmRenderError
        expect("secret" in str(exc), f"render failed, but not with the expected message: {exc}")
        return
    raise Failure("a connection URL in `config` rendered into the ConfigMap instead of failing")


def values_documented() -> None:
    """Every value in values.yaml carries a comment: on its line, on the line above, or (for a
    mapping that is one value, such as a securityContext) on the mapping marked `# --`."""
    lines = (CHART / "values.yaml").read_text(encoding="utf-8").splitlines()
    undocumented = []
    ancestors: list[tuple[int, bool]] = []  # (indent, documented as a whole value)
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_][A-Za-z0-9_]*):(.*)$", line)
        if not m:
            continue
        indent, key, rest = len(m.group(1)), m.group(2), m.group(3)
        while ancestors and ancestors[-1][0] >= indent:
            ancestors.pop()
        value, _, trailing = rest.partition("#")
        block = []  # the comment lines directly above
        j = i - 1
        while j >= 0 and lines[j].strip().startswith("#"):
            block.insert(0, lines[j].strip())
            j -= 1
        documented = bool(trailing.strip()) or bool(block)
        whole = bool(block) and block[0].startswith("# --")
        covered = any(whole for _, whole in ancestors)
        if value.strip():  # a leaf
            if not (documented or covered):
                undocumented.append(f"line {i + 1}: {key}")
        else:  # a mapping: its children are the values, unless it is documented as one value
            ancestors.append((indent, covered or whole))
    expect(not undocumented, "values without a comment: " + ", ".join(undocumented))


# --------------------------------------------------------------------------------------------


def main() -> int:
    run = Runner()
    run.check("docker: Dockerfile stages, build command, user, binaries, ports", check_dockerfile)
    run.check("docker: .dockerignore excludes target/, .venv/, .git/", check_dockerignore)
    compose_checks(run)

    run.check("helm: values.yaml documents every value", values_documented)
    production = load_yaml(CHART / "values-production.yaml")
    chart_checks(run, "default", None, {
        "ingest_hpa": True, "dispatcher_hpa": True, "scaled_object": False, "service_monitor": False,
    })
    chart_checks(run, "production", production, {
        "ingest_hpa": True, "dispatcher_hpa": False, "scaled_object": True, "service_monitor": True,
    })
    fixed = {"ingest": {"autoscaling": {"enabled": False}}, "dispatcher": {"autoscaling": {"enabled": False}},
             "console": {"enabled": False}}
    chart_checks(run, "no-autoscaling", fixed, {
        "ingest_hpa": False, "dispatcher_hpa": False, "scaled_object": False, "service_monitor": False,
    }, lint_it=False)
    run.check("helm: refuses connection URLs in the ConfigMap", chart_refuses_secrets_in_config)

    if run.failed:
        print("failed: " + "; ".join(run.failed))
    print(f"deploy: {run.passed} passed, {len(run.failed)} failed")
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
