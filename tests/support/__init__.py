"""Support code for the tests: stand-alone worker processes, fake provider servers, test gateways and
builders of whole scenarios (factories are in tests/factories.py, fixtures in tests/conftest.py)."""
