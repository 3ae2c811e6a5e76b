"""pytest fixtures for the fake model servers: ``fake_openai`` and ``fake_anthropic``.

Usage (in a conftest or test module)::

    from tests.fakes.fixtures import fake_anthropic, fake_openai  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fresh fake OpenAI server for one test, closed afterwards."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A fresh fake Anthropic server for one test, closed afterwards."""
    with FakeAnthropic() as fake:
        yield fake
