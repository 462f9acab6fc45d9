"""Browser tests: Playwright driving Debian's Chromium against servers on loopback."""
