"""Clocks, the planner and its follow modes, the scheduler, the note tracker, and their wiring."""
