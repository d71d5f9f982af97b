"""Pure musical values: ticks and tempo maps, notes, scales, MIDI files.

Context: any. Imports nothing of livegen but :mod:`livegen.errors`.
"""
