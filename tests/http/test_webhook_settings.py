"""An admin's webhook settings: each mistake is refused at start, naming the webhook and the fix."""

from __future__ import annotations

import re

import pytest

from cortex.plugins.http.webhooks import Webhook

GOOD = {"url": "https://example.test/hook", "secret": "s"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({**GOOD, "url": "ftp://example.test"}, "#1: url must be an http:// or https:// URL"),
        ({**GOOD, "topics": []}, "#1: topics must be a non-empty list of globs"),
        ({**GOOD, "topics": ["memory.*", ""]}, "#1: topics must be a non-empty list of globs"),
        ({"url": GOOD["url"]}, "#1: give a signing secret"),
        ({"url": GOOD["url"], "secret_env": "NOT_SET_ANYWHERE"}, "#1: give a signing secret"),
        ({**GOOD, "attempts": 0}, "#1: attempts must be between 1 and 20"),
        ({**GOOD, "atempts": 3}, "unknown setting(s) atempts"),
    ],
)
def test_each_mistake_is_refused(raw, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Webhook.from_config(0, raw, env={})


def test_a_good_webhook_takes_its_secret_from_the_environment():
    hook = Webhook.from_config(1, {"url": GOOD["url"], "secret_env": "HOOK_SECRET", "topics": ["memory.*"]}, {"HOOK_SECRET": "k"})
    assert (hook.name, hook.secret, hook.topics, hook.attempts) == ("webhook-2", b"k", ("memory.*",), 5)
    assert hook.wants("memory.stored") and not hook.wants("plans.made")
