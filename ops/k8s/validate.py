"""Render every overlay with ``kubectl kustomize`` and validate each object offline:
Kubernetes kinds against the Kubernetes schemas (the kubernetes-validate package, strict:
an unknown field fails), KEDA's ScaledObject and TriggerAuthentication against the CRD
schemas in ops/k8s/schemas/. Also: the generated base files are what the fleet list
ops/deployments.yaml makes, and no image is untagged or ``:latest``.

``make manifests`` runs it (after regenerating); CI runs ``make manifests-check``.
Prints one line per overlay; exits 1 naming every problem.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
OVERLAYS = ("cpu-only", "gpu", "production")
EXTRAS = ("monitoring",)  # applied beside an overlay
KUBERNETES = "1.32.0"
CRDS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh-scaledobject-v1alpha1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda.sh-triggerauthentication-v1alpha1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com-prometheusrule-v1.json",
}


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(HERE / ("" if overlay in EXTRAS else "overlays") / overlay)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"kubectl kustomize {overlay} failed:\n{out.stderr}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _images(doc: dict[str, Any]) -> list[str]:
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec", {}) if "template" in spec else {}
    return [c.get("image", "") for c in pod.get("containers", []) + pod.get("initContainers", [])]


def problems(docs: list[dict[str, Any]]) -> list[str]:
    found = []
    for doc in docs:
        where = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        schema_file = CRDS.get((doc.get("apiVersion", ""), doc.get("kind", "")))
        try:
            if schema_file:
                schema = json.loads((HERE / "schemas" / schema_file).read_text())
                jsonschema.validate(doc, schema)
            else:
                kubernetes_validate.validate(doc, KUBERNETES, strict=True)
        except (jsonschema.ValidationError, kubernetes_validate.ValidationError) as exc:
            path = ".".join(str(p) for p in getattr(exc, "absolute_path", []))
            found.append(f"{where}: {path + ': ' if path else ''}{exc.message}")
        except kubernetes_validate.SchemaNotFoundError:
            found.append(f"{where}: no schema for {doc.get('apiVersion')} {doc.get('kind')}")
        for image in _images(doc):
            tag = image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""
            if not tag or tag == "latest":
                found.append(f"{where}: image {image!r} has no pinned tag")
    return found


def main() -> int:
    sys.path.insert(0, str(HERE))
    import generate

    failed = generate.main(["--check"]) != 0
    for overlay in (*OVERLAYS, *EXTRAS):
        docs = render(overlay)
        errors = problems(docs)
        kinds = sorted({d["kind"] for d in docs})
        print(f"{overlay}: {len(docs)} objects ({', '.join(kinds)}): {len(errors)} problems")
        for error in errors:
            print(f"  {error}")
        failed = failed or bool(errors)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
