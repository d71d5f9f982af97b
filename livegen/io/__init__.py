"""MIDI in and out, the built-in synth, the recorder, and in-memory twins for tests."""
