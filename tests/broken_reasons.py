"""The messages the test plugin's projectors (broken_projector.py) fail with, importable without
registering them: a test that imports broken_projector adds its entries to the pytest process's
own registry, and every in-process test that lists the registry would then see them."""

REASON = "the broken projector's native library failed to load"
FAILING_REASON = "the failing projector's library gave up on this input"
