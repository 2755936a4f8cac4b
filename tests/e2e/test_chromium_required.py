"""Browser tests need Chromium: without it they skip on a developer's machine, but fail in CI
(`CI=true`), so a CI machine that lost its browser cannot pass them silently."""

from __future__ import annotations

import pytest

from tests.support import browser


@pytest.mark.parametrize(
    ("ci", "outcome"), [("true", pytest.fail.Exception), ("", pytest.skip.Exception)]
)
def test_a_missing_chromium_fails_in_ci_and_skips_elsewhere(monkeypatch, tmp_path, ci, outcome):
    monkeypatch.setattr(browser, "CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="chromium / chromedriver not installed"):
        browser.require_chromium()
