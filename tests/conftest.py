"""What both tiers need. The integration tier's fixtures on real services are in
tests/integration/conftest.py; plain helpers in tests/helpers.py and
tests/processes.py."""

from __future__ import annotations

import pytest

# Plain asserts in the shared storage contract should say what differed, as in a test module.
pytest.register_assert_rewrite("tests.storage_contract")
