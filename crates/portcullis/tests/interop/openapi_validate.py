"""Validates an OpenAPI document (read from stdin) as OpenAPI 3.1 with the
openapi-spec-validator package: prints `valid`, or the first error and exits 1."""
import json
import sys

from openapi_spec_validator import OpenAPIV31SpecValidator

doc = json.load(sys.stdin)
if doc.get("openapi", "").split(".")[:2] != ["3", "1"]:
    print(f"not OpenAPI 3.1: openapi = {doc.get('openapi')!r}")
    sys.exit(1)
errors = list(OpenAPIV31SpecValidator(doc).iter_errors())
for e in errors[:20]:
    print(f"{'/'.join(map(str, e.absolute_path))}: {e.message}")
if errors:
    sys.exit(1)
print("valid")
