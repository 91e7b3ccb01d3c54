"""The real FHIR R4 server for tests (HAPI FHIR's plain-server libraries): its one home is
``standins/fhir_r4_server.py`` (built from ``deploy/local/fhir-r4/``), which the demo uses
too; the tests import it from here."""

from __future__ import annotations

from standins.fhir_r4_server import HAPI_VERSION, FhirR4Server, build

__all__ = ["HAPI_VERSION", "FhirR4Server", "build"]
