"""What the tests share, one module for each kind of thing (importing this package imports nothing):

- `needs`: skip when the machine lacks a program or the broker, fail instead under PULSE_REQUIRE_E2E=1;
- `waits`: `wait_until`, the one way a test waits, with a deadline and what it saw when it gave up;
- `procs`: processes a test starts (`pulse` commands, other programs) and the /proc tree they leave;
- `kafka`: publish, end offsets, read topics to their end offsets, follow a topic;
- `metrics`: Prometheus text as samples;
- `cluster`: workers as real processes, and the deployment (prefix, app id) they form;
- `quiet`: proofs that nothing more arrives, from end offsets and what the workers report;
- `groundtruth`: the figures a known event set must produce, computed without pipeline code;
- `servers`: local servers speaking the notification channels' wire formats.
"""
