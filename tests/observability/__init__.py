"""Tests of rspp.observability: traces and log lines."""
