"""``vatic workflow`` (and ``vatic init``'s deploy files): the Dockerfile and the GitHub Actions workflow.

The workflows are checked by actionlint (built by ``make setup`` from the Go module proxy; it runs shellcheck on
every ``run:`` script when shellcheck is installed, as ``make setup`` does), the tool a GitHub user would run, not
by a schema of our own. What they deploy is checked against the same render ``vatic render`` writes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from vatic.cli.deploy.output import render_service
from vatic.cli.deploy.workflow import TOOLS_IMAGE, deploy_order

VATIC = str(Path(sys.executable).parent / "vatic")
ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = [ROOT / "examples" / "fraud_detection" / "service", ROOT / "examples" / "product_categorization" / "service"]


def _actionlint() -> str:
    for candidate in (os.environ.get("VATIC_ACTIONLINT"), str(ROOT / ".cache" / "go" / "bin" / "actionlint")):
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("actionlint")
    if found is None:
        pytest.fail("actionlint not found: run `make setup` (it builds actionlint from the Go module proxy)")
    return found


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    workflows = sorted(str(p) for p in (root / ".github" / "workflows").glob("*.yml"))
    assert workflows
    return subprocess.run(
        [_actionlint(), "-color=false", *workflows], capture_output=True, text=True, check=False, cwd=root
    )


def _vatic(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([VATIC, *args], capture_output=True, text=True, check=False, cwd=cwd, timeout=300)


def _write(service_dir: Path, out: Path) -> dict[str, object]:
    done = _vatic("workflow", str(service_dir), "--out", str(out))
    assert done.returncode == 0, done.stderr
    name = yaml.safe_load((service_dir / "service.yaml").read_text(encoding="utf-8"))["service"]
    workflow = yaml.safe_load((out / ".github" / "workflows" / f"deploy-{name}.yml").read_text(encoding="utf-8"))
    assert isinstance(workflow, dict)
    return workflow


def _run_script(job: dict[str, object]) -> str:
    steps = job["steps"]
    assert isinstance(steps, list)
    return "\n".join(str(step.get("run", "")) for step in steps)


@pytest.mark.parametrize("service_dir", EXAMPLES, ids=lambda p: p.parent.name)
def test_the_example_services_workflows_pass_actionlint_and_deploy_what_render_writes(tmp_path, service_dir):
    workflow = _write(service_dir, tmp_path)
    done = _lint(tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr

    jobs = workflow["jobs"]
    assert isinstance(jobs, dict)
    envs = deploy_order([p.stem for p in service_dir.glob("*.yaml") if p.name != "service.yaml"])
    assert envs == ["staging", "production"]
    # the order: test -> image -> staging -> its check -> production (behind its GitHub environment) -> its check
    assert jobs["image"]["needs"] == "test"
    assert jobs["deploy-staging"]["needs"] == ["image"]
    assert jobs["check-staging"]["needs"] == "deploy-staging"
    assert jobs["deploy-production"]["needs"] == ["image", "check-staging"]
    assert jobs["check-production"]["needs"] == "deploy-production"
    assert jobs["deploy-production"]["environment"] == "production"
    assert jobs["test"]["container"] == TOOLS_IMAGE

    for env in envs:
        # every Deployment and FlinkDeployment `vatic render` writes is waited for, in the namespace it writes
        _, files = render_service(service_dir, env, validate=False)
        objects = [yaml.safe_load(text) for name, text in files.items() if name.endswith(".yaml")]
        script = _run_script(jobs[f"deploy-{env}"])
        assert f'--env {env} --image "$MODEL_IMAGE"' in script
        waited = 0
        for obj in objects:
            if obj.get("kind") in ("Deployment", "FlinkDeployment"):
                namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
                kind = "deployment" if obj["kind"] == "Deployment" else "flinkdeployment"
                assert f"kubectl -n {namespace} " in script
                assert f"{kind}/{name} " in script
                waited += 1
        assert waited == script.count("rollout status") + script.count("wait flinkdeployment")

    # the Dockerfile builds on the model-server image docker-compose.yml builds (one tag, one source)
    project = service_dir.parent.relative_to(ROOT)
    dockerfile = (tmp_path / project / "Dockerfile").read_text(encoding="utf-8")
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    image, _, tag = compose["x-server-image"]["image"].partition(":")
    assert f"ARG VATIC_VERSION={tag}\nFROM {image}:${{VATIC_VERSION}}\n" in dockerfile
    # the example's code is vatic's own (in the base image): nothing of the project is copied
    assert "COPY" not in dockerfile


def test_actionlint_refuses_a_broken_workflow(tmp_path):
    _write(EXAMPLES[0], tmp_path)
    path = tmp_path / ".github" / "workflows" / "deploy-fraud-detection.yml"
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace("needs: deploy-staging", "needs: deploy-qa"), encoding="utf-8")
    done = _lint(tmp_path)
    assert done.returncode == 1
    assert "deploy-qa" in done.stdout


def test_a_new_project_gets_its_dockerfile_and_workflow(tmp_path):
    dest = tmp_path / "churn-score"
    done = _vatic("init", str(dest), "--tier", "low-code", "--library", "sklearn", "--no-train", "--project", "crm")
    assert done.returncode == 0, done.stderr
    assert f"{dest}/.github/workflows/deploy-churn-score.yml" in done.stdout
    assert _lint(dest).returncode == 0

    # the project's own package goes into the image; the model does not (the registry serves it)
    dockerfile = (dest / "Dockerfile").read_text(encoding="utf-8")
    assert "COPY --chown=65532:65532 churn_score/ churn_score/\nENV PYTHONPATH=/opt/project\n" in dockerfile
    assert "registry" not in dockerfile.split("FROM", 1)[1]

    workflow = yaml.safe_load((dest / ".github/workflows/deploy-churn-score.yml").read_text(encoding="utf-8"))
    jobs = workflow["jobs"]
    test_steps = jobs["test"]["steps"]
    assert any("-m pytest" in str(step.get("run", "")) for step in test_steps)
    assert jobs["image"]["steps"][3]["with"]["context"] == "."
    # the staging gateway is open: one prediction of service/smoke.json; production authenticates its clients
    assert "vatic predict churn-score --url http://127.0.0.1:18081 --data @service/smoke.json" in _run_script(
        jobs["check-staging"]
    )
    assert "vatic predict" not in _run_script(jobs["check-production"])
    assert "kubectl -n crm-staging rollout status deployment/churn-score-model" in _run_script(jobs["deploy-staging"])

    # regenerated the same: `--check` finds nothing to change, then a config change shows
    assert _vatic("workflow", str(dest / "service"), "--check").returncode == 0
    staging = dest / "service" / "staging.yaml"
    staging.write_text(staging.read_text(encoding="utf-8") + "kubernetes:\n  namespace: crm-qa\n", encoding="utf-8")
    done = _vatic("workflow", str(dest / "service"), "--check")
    assert done.returncode == 1
    assert "deploy-churn-score.yml" in done.stdout
    assert _vatic("workflow", str(dest / "service")).returncode == 0
    text = (dest / ".github/workflows/deploy-churn-score.yml").read_text(encoding="utf-8")
    assert "kubectl -n crm-qa rollout status deployment/churn-score-model" in text


def test_a_service_without_environments_is_refused_in_one_line(tmp_path):
    service = tmp_path / "svc" / "service"
    service.mkdir(parents=True)
    shutil.copy(EXAMPLES[0] / "service.yaml", service / "service.yaml")
    done = _vatic("workflow", str(service), "--root", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().endswith("no environment overlays (staging.yaml, production.yaml): nothing to deploy to")
    assert len(done.stderr.strip().splitlines()) == 1


def test_render_deploys_the_image_it_is_given_and_refuses_a_bad_reference(tmp_path):
    digest = "ghcr.io/acme/fraud-detection-model@sha256:" + "ab" * 32
    done = _vatic("render", str(EXAMPLES[0]), "--env", "staging", "--image", digest, "--out", str(tmp_path), cwd=ROOT)
    assert done.returncode == 0, done.stderr
    deployment = yaml.safe_load((tmp_path / "fraud-detection/staging/model-deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    images = {c["image"] for c in pod["containers"] + pod.get("initContainers", [])}
    assert images == {digest}
    # the gateway and the job keep the config's pipeline image
    gateway = yaml.safe_load((tmp_path / "fraud-detection/staging/gateway-deployment.yaml").read_text())
    assert gateway["spec"]["template"]["spec"]["containers"][0]["image"] == "vatic/pipeline:0.1.0"

    done = _vatic("render", str(EXAMPLES[0]), "--env", "staging", "--image", "Not An Image", "--out", str(tmp_path))
    assert done.returncode == 2
    assert "--image 'Not An Image' is not an image reference" in done.stderr
