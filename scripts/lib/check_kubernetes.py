#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests in deploy/kubernetes/, run by
scripts/check-kubernetes.sh in its venv (kubernetes-validate and PyYAML).

1. Every built-in kind against the Kubernetes OpenAPI schemas that kubernetes-validate ships,
   strict (an unknown or misspelled field is an error), for each Kubernetes minor from
   OLDEST_KUBERNETES to the newest it knows.
2. The manifests against each other and against what pgkpi needs, which no schema knows:
   selectors that select, ports that exist, the config file where --config.file says, the
   password files inside the Secret's mount, the StatefulSet's --total-shards equal to its
   replicas, the pod hardening on every workload, and no Secret object (no secret value) in
   the manifests.
3. Writes what the other tools check into OUT (argument 1):
   crds.json          the ServiceMonitors and PrometheusRules, for validate-crds.mjs;
   rules/<file>.yml   each PrometheusRule's groups as a rule file named after its source
                      (pgkpi-database -> database.yml), for promtool check rules / test rules;
   pgkpi.toml         the ConfigMap's configuration, for pgkpi check-config;
   prometheus-scrape.yml  deploy/kubernetes/prometheus-scrape.yml with each
                      kubernetes_sd_configs replaced by a static target, for promtool check
                      config (Debian's promtool knows no Kubernetes discovery); the discovery
                      blocks themselves are checked here, against the roles Prometheus has.
Exits 1 listing every problem found.
"""

import json
import sys
import tomllib
from pathlib import Path

import kubernetes_validate
from kubernetes_validate.utils import all_versions
import yaml
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
# Kinds validated by scripts/lib/validate-crds.mjs, not by kubernetes-validate.
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
# The oldest Kubernetes minor the manifests must be valid for.
OLDEST_KUBERNETES = Version("1.30")
WORKLOAD_KINDS = {"Deployment", "StatefulSet"}
# What the two modes are made of: each must be there, or the checks below would pass on less.
REQUIRED_KINDS = {"ServiceAccount", "ConfigMap", "Deployment", "StatefulSet", "Service",
                  "ServiceMonitor", "PrometheusRule"}
SCRAPE_CONFIG = MANIFESTS / "prometheus-scrape.yml"
# kubernetes_sd_configs roles Prometheus knows.
SD_ROLES = {"node", "service", "pod", "endpoints", "endpointslice", "ingress"}

problems = []


def problem(where, text):
    problems.append(f"{where}: {text}")


def load():
    """[(file relative to the repository, document)] of every manifest: the *.yaml files
    (prometheus-scrape.yml, a Prometheus file, is checked by check_scrape_config)."""
    docs = []
    for path in sorted(MANIFESTS.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            where = str(path.relative_to(ROOT))
            if not isinstance(doc, dict) or not all(k in doc for k in ("apiVersion", "kind", "metadata")):
                problem(where, "a document without apiVersion, kind and metadata")
                continue
            docs.append((where, doc))
    return docs


def name(doc):
    return f"{doc['kind']}/{doc['metadata'].get('name')}"


def validate_builtin(docs):
    versions = [v for v in all_versions() if Version(v) >= OLDEST_KUBERNETES]
    if not versions:
        problem("kubernetes-validate", f"ships no schema for Kubernetes {OLDEST_KUBERNETES} or newer")
    for where, doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError as e:
                problem(where, f"{name(doc)}: {e.message}")
                break
            except kubernetes_validate.ValidationError as e:
                path = "/".join(str(p) for p in e.path)
                problem(where, f"{name(doc)} on Kubernetes {version}: {path}: {e.message}")
                break
    return versions


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_workload(where, doc, configmaps, services):
    spec = doc["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    me = name(doc)
    if not selects(spec["selector"].get("matchLabels"), labels):
        problem(where, f"{me}: spec.selector does not select its own pod template")
    if pod.get("automountServiceAccountToken") is not False:
        problem(where, f"{me}: automountServiceAccountToken must be false (pgkpi never calls the API)")
    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        problem(where, f"{me}: pod securityContext.runAsNonRoot must be true")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problem(where, f"{me}: pod seccompProfile must be RuntimeDefault")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for c in pod["containers"]:
        cme = f"{me} container {c['name']}"
        csc = c.get("securityContext", {})
        if csc.get("readOnlyRootFilesystem") is not True:
            problem(where, f"{cme}: readOnlyRootFilesystem must be true")
        if csc.get("allowPrivilegeEscalation") is not False:
            problem(where, f"{cme}: allowPrivilegeEscalation must be false")
        if csc.get("capabilities", {}).get("drop") != ["ALL"]:
            problem(where, f"{cme}: capabilities must drop ALL")
        res = c.get("resources", {})
        for kind in ("requests", "limits"):
            for r in ("cpu", "memory"):
                if r not in res.get(kind, {}):
                    problem(where, f"{cme}: no {kind}.{r}")
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = c.get(probe, {}).get("httpGet", {})
            if get.get("path") != path or get.get("port") not in ports:
                problem(where, f"{cme}: {probe} must GET {path} on a named container port")
        args = c.get("args", [])
        flags = dict(a.split("=", 1) if "=" in a else (a, "") for a in args)
        mounts = {m["mountPath"]: volumes.get(m["name"]) for m in c.get("volumeMounts", [])}
        check_config_file(where, cme, flags.get("--config.file"), mounts, configmaps)
        if doc["kind"] == "StatefulSet":
            if "--shard-from-hostname" not in flags:
                problem(where, f"{cme}: a StatefulSet takes its shard from the pod name: --shard-from-hostname")
            total = flags.get("--total-shards")
            if total != str(spec.get("replicas", 1)):
                problem(where, f"{cme}: --total-shards={total} must equal replicas ({spec.get('replicas', 1)}): "
                        "change both together")
        elif any(a.startswith(("--shard", "--total-shards")) for a in args):
            problem(where, f"{cme}: a single instance polls every target: no shard flags")
    if doc["kind"] == "StatefulSet":
        svc = services.get(spec.get("serviceName"))
        if svc is None or svc["spec"].get("clusterIP") != "None":
            problem(where, f"{me}: serviceName must name a headless Service (clusterIP: None), so each shard is scraped")
    if not any(selects(s["spec"].get("selector"), labels) for s in services.values()):
        problem(where, f"{me}: no Service selects its pods")


def check_config_file(where, who, config_file, mounts, configmaps):
    """--config.file must be a key of a mounted ConfigMap, and its password files must lie in
    a mounted Secret."""
    if not config_file:
        problem(where, f"{who}: no --config.file")
        return
    directory, _, key = config_file.rpartition("/")
    volume = mounts.get(directory)
    cm = configmaps.get((volume or {}).get("configMap", {}).get("name"))
    if cm is None or key not in cm.get("data", {}):
        problem(where, f"{who}: --config.file={config_file} is not a key of a ConfigMap mounted at {directory}")
        return
    config = tomllib.loads(cm["data"][key])
    for target in config.get("targets", []):
        pw = target.get("password_file")
        if pw and not (mounts.get(pw.rpartition("/")[0]) or {}).get("secret"):
            problem(where, f"{who}: target {target.get('name')}: password_file {pw} is not in a mounted Secret")


def check_servicemonitors(docs, services):
    for where, doc in docs:
        if doc["kind"] != "ServiceMonitor":
            continue
        selector = doc["spec"].get("selector", {}).get("matchLabels")
        matched = [s for s in services.values() if selects(selector, s["metadata"].get("labels", {}))]
        if len(matched) != 1:
            problem(where, f"{name(doc)}: selects {len(matched)} Services, expected exactly one")
            continue
        ports = {p.get("name") for p in matched[0]["spec"]["ports"]}
        for e in doc["spec"].get("endpoints", []):
            if e.get("port") not in ports:
                problem(where, f"{name(doc)}: endpoint port {e.get('port')!r} is not a port of {name(matched[0])}")


def check_scrape_config(services, out):
    """Checks the discovery blocks and that each job keeps the pods of one of the Services
    (its name and instance labels and its port name), and writes the copy for promtool."""
    scrape = yaml.safe_load(SCRAPE_CONFIG.read_text())
    where = str(SCRAPE_CONFIG.relative_to(ROOT))
    wanted = {
        (s["metadata"]["labels"].get("app.kubernetes.io/name"),
         s["metadata"]["labels"].get("app.kubernetes.io/instance"), p["name"])
        for s in services.values() for p in s["spec"]["ports"]
    }
    keep_labels = ["__meta_kubernetes_service_label_app_kubernetes_io_name",
                   "__meta_kubernetes_service_label_app_kubernetes_io_instance",
                   "__meta_kubernetes_endpoint_port_name"]
    kept = set()
    for job in scrape.get("scrape_configs", []):
        job_name = job.get("job_name")
        for sd in job.pop("kubernetes_sd_configs", []):
            if set(sd) != {"role"} or sd["role"] not in SD_ROLES:
                problem(where, f"job {job_name}: kubernetes_sd_configs entry {sd}: "
                        f"expected only a role, one of {sorted(SD_ROLES)}")
            job.setdefault("static_configs", []).append({"targets": ["pgkpi.example:9188"]})
        keeps = [r for r in job.get("relabel_configs", [])
                 if r.get("action") == "keep" and r.get("source_labels") == keep_labels]
        values = tuple(keeps[0].get("regex", "").split(";")) if len(keeps) == 1 else None
        if values not in wanted:
            problem(where, f"job {job_name}: must keep exactly the endpoints of one Service of the manifests "
                    f"(one keep rule on {';'.join(keep_labels)} with regex <name>;<instance>;<port>), "
                    f"found {values}")
        kept.add(values)
    if len(kept) != len(services):
        problem(where, f"{len(kept)} jobs for {len(services)} Services: one job per Service")
    (out / "prometheus-scrape.yml").write_text(yaml.safe_dump(scrape, sort_keys=False))


def write_outputs(docs, out):
    out.mkdir(parents=True, exist_ok=True)
    crds = [{"file": where, "doc": doc} for where, doc in docs if doc["kind"] in CRD_KINDS]
    (out / "crds.json").write_text(json.dumps(crds))
    rules = out / "rules"
    rules.mkdir(exist_ok=True)
    for old in rules.glob("*.yml"):
        old.unlink()
    for where, doc in docs:
        if doc["kind"] == "PrometheusRule":
            stem = doc["metadata"]["name"].removeprefix("pgkpi-")
            (rules / f"{stem}.yml").write_text(yaml.safe_dump({"groups": doc["spec"]["groups"]}, sort_keys=False))
        if doc["kind"] == "ConfigMap" and "pgkpi.toml" in doc.get("data", {}):
            (out / "pgkpi.toml").write_text(doc["data"]["pgkpi.toml"])
    return len(crds)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: check_kubernetes.py OUT_DIRECTORY")
    docs = load()
    by_kind = {}
    for _, doc in docs:
        by_kind.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    for kind in sorted(REQUIRED_KINDS - set(by_kind)):
        problem(str(MANIFESTS.relative_to(ROOT)), f"no {kind}")
    for where, doc in docs:
        if doc["kind"] == "Secret":
            problem(where, f"{name(doc)}: the manifests reference the Secret, they never hold one")
    versions = validate_builtin(docs)
    services = by_kind.get("Service", {})
    for where, doc in docs:
        if doc["kind"] in WORKLOAD_KINDS:
            check_workload(where, doc, by_kind.get("ConfigMap", {}), services)
    check_servicemonitors(docs, services)
    out = Path(sys.argv[1])
    crds = write_outputs(docs, out)
    check_scrape_config(services, out)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    builtin = len(docs) - crds
    print(f"{builtin} built-in objects valid (strict) on Kubernetes {versions[0]} to {versions[-1]}; "
          f"{crds} ServiceMonitor/PrometheusRule objects written for their schema check; "
          "selectors, ports, config and secret mounts, shards, pod hardening and the scrape jobs consistent")


if __name__ == "__main__":
    main()
