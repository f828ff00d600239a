"""Every manifest ``vatic render`` writes, applied to a real Kubernetes API server with server-side dry run.

The API server is kube-apiserver built from k8s.io/kubernetes (``make test-k8s`` builds it from the Go module
proxy) on Debian's etcd, both on free loopback ports in a temporary folder; the client is kubectl, as an operator
or the generated deploy workflow runs it. The custom resources' definitions (FlinkDeployment, ScaledObject,
TriggerAuthentication, ServiceMonitor, PrometheusRule) are installed first, from the schemas the offline validation
uses. Each service's namespace is created for real (a dry-run namespace would not exist for the objects in it);
everything else only in dry run, so the server admits, defaults and validates each object (strict field
validation: an unknown field is an error) without storing it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fixtures.model_server import free_ports
from vatic.cli.deploy.validate import custom_resource_definitions

ROOT = Path(__file__).resolve().parents[2]
VATIC = str(Path(sys.executable).parent / "vatic")
TOKEN = "vatic-test-token"  # a static token of system:masters, for this throwaway server only
EXAMPLES = [ROOT / "examples" / "fraud_detection" / "service", ROOT / "examples" / "product_categorization" / "service"]


def _binary(env: str, default: Path | None, name: str, hint: str) -> str:
    candidate = os.environ.get(env) or (str(default) if default else None)
    if candidate and Path(candidate).is_file():
        return candidate
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} not found: {hint}")
    return found


@dataclass(frozen=True)
class ApiServer:
    url: str
    folder: Path

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        kubectl = _binary("VATIC_KUBECTL", None, "kubectl", "run `make test-k8s` (installs Debian's kubernetes-client)")
        argv = [kubectl, "--server", self.url, "--token", TOKEN, "--insecure-skip-tls-verify", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


@pytest.fixture(scope="module")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    folder = tmp_path_factory.mktemp("apiserver")
    etcd = _binary("VATIC_ETCD", None, "etcd", "run `make test-k8s` (installs Debian's etcd-server)")
    apiserver = _binary(
        "VATIC_KUBE_APISERVER", ROOT / ".cache" / "k8s" / "kube-apiserver", "kube-apiserver",
        "run `make test-k8s` (builds it from the Go module proxy)",
    )  # fmt: skip
    client, peer, secure = free_ports(3)
    subprocess.run(["openssl", "genrsa", "-out", str(folder / "sa.key"), "2048"], check=True, capture_output=True)
    subprocess.run(["openssl", "rsa", "-in", str(folder / "sa.key"), "-pubout", "-out", str(folder / "sa.pub")],
                   check=True, capture_output=True)  # fmt: skip
    (folder / "tokens.csv").write_text(f'{TOKEN},vatic,1,"system:masters"\n', encoding="utf-8")
    processes = [
        subprocess.Popen(
            [etcd, "--data-dir", str(folder / "etcd"), "--listen-client-urls", f"http://127.0.0.1:{client}",
             "--advertise-client-urls", f"http://127.0.0.1:{client}", "--listen-peer-urls", f"http://127.0.0.1:{peer}"],
            stdout=(folder / "etcd.log").open("w"), stderr=subprocess.STDOUT,
        ),  # fmt: skip
    ]
    processes.append(
        subprocess.Popen(
            [apiserver, f"--etcd-servers=http://127.0.0.1:{client}", "--bind-address=127.0.0.1",
             "--advertise-address=127.0.0.1", f"--secure-port={secure}", f"--cert-dir={folder / 'certs'}",
             "--authorization-mode=AlwaysAllow", f"--token-auth-file={folder / 'tokens.csv'}",
             "--service-account-issuer=https://kubernetes.default.svc", f"--service-account-key-file={folder / 'sa.pub'}",
             f"--service-account-signing-key-file={folder / 'sa.key'}", "--service-cluster-ip-range=10.96.0.0/16",
             "--endpoint-reconciler-type=none"],
            stdout=(folder / "apiserver.log").open("w"), stderr=subprocess.STDOUT,
        )  # fmt: skip
    )
    server = ApiServer(f"https://127.0.0.1:{secure}", folder)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                ready = httpx.get(f"{server.url}/readyz", verify=False, timeout=2,  # noqa: S501 - its own cert
                                  headers={"Authorization": f"Bearer {TOKEN}"})  # fmt: skip
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert all(p.poll() is None for p in processes), (folder / "apiserver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (folder / "apiserver.log").read_text()[-3000:]
            time.sleep(0.5)
        crds = folder / "crds.yaml"
        crds.write_text(yaml.safe_dump_all(custom_resource_definitions()), encoding="utf-8")
        installed = server.kubectl("apply", "--server-side", "-f", str(crds))
        assert installed.returncode == 0, installed.stderr
        done = server.kubectl("wait", "--for=condition=Established", "--timeout=60s", "-f", str(crds))
        assert done.returncode == 0, done.stderr
        yield server
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def _render(service_dir: Path, env: str, out: Path) -> Path:
    done = subprocess.run([VATIC, "render", str(service_dir), "--env", env, "--out", str(out)],
                          capture_output=True, text=True, check=False, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    folders = [p for p in out.glob(f"*/{env}") if p.is_dir()]
    assert len(folders) == 1
    return folders[0]


@pytest.mark.parametrize("env", ["staging", "production"])
@pytest.mark.parametrize("service_dir", EXAMPLES, ids=lambda p: p.parent.name)
def test_every_rendered_manifest_passes_a_server_side_dry_run(apiserver, service_dir, env, tmp_path):
    folder = _render(service_dir, env, tmp_path)
    namespace = yaml.safe_load((folder / "namespace.yaml").read_text())
    created = apiserver.kubectl("apply", "--server-side", "-f", str(folder / "namespace.yaml"))
    assert created.returncode == 0, created.stderr
    # the whole folder as the deploy workflow applies it: the kustomization (the dashboard's ConfigMap too)
    applied = apiserver.kubectl("apply", "--server-side", "--field-manager=vatic", "--dry-run=server", "-k",
                                str(folder))  # fmt: skip
    assert applied.returncode == 0, applied.stderr
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    lines = applied.stdout.strip().splitlines()
    assert all(line.endswith("(server dry run)") for line in lines), applied.stdout
    assert len(lines) == len(kustomization["resources"]) + 1  # every object, and the dashboard's ConfigMap
    kinds = {yaml.safe_load((folder / name).read_text())["kind"] for name in kustomization["resources"]}
    assert {"Deployment", "FlinkDeployment", "ServiceMonitor"} <= kinds
    # nothing but the namespace was stored
    stored = apiserver.kubectl("get", "deployments,flinkdeployments,servicemonitors", "-n",
                               namespace["metadata"]["name"], "-o", "name")  # fmt: skip
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.strip() == ""


def test_the_server_refuses_what_it_should(apiserver, tmp_path):
    folder = _render(EXAMPLES[0], "staging", tmp_path)
    assert apiserver.kubectl("apply", "--server-side", "-f", str(folder / "namespace.yaml")).returncode == 0
    # a field the FlinkDeployment CRD does not declare; a Deployment whose selector does not match its pods
    flink = yaml.safe_load((folder / "flink-deployment.yaml").read_text())
    flink["spec"]["parallelizm"] = 4
    deployment = yaml.safe_load((folder / "model-deployment.yaml").read_text())
    deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] = "someone-else"
    for obj, error in (
        (flink, ".spec.parallelizm: field not declared in schema"),
        (deployment, "`selector` does not match template `labels`"),
    ):
        path = tmp_path / f"{obj['kind']}.yaml"
        path.write_text(yaml.safe_dump(obj), encoding="utf-8")
        refused = apiserver.kubectl("apply", "--server-side", "--dry-run=server", "-f", str(path))
        assert refused.returncode != 0
        assert error in refused.stderr
