from __future__ import annotations

from tests.fakes.fixtures import fake_anthropic, fake_openai  # noqa: F401
