"""Argument checks shared by snippets, the decoders, the tokenizers and the optimizers.

A wrong type is a TypeError, a value out of range a ValueError, and both messages read
"<where>: <name> must be <expected>, got <value>", so the caller sees the culprit, not a crash
several frames down (a division by zero, `range(2.5)`, a beam as wide as the vocabulary).
NumPy only.
"""

import numpy as np


def _check_int(where, name, value, minimum=0, allow_none=False):
    """`value` as a Python int >= `minimum` (or None when `allow_none`).

    NumPy integers count as ints; bools and floats (even 2.0) do not.
    """
    if value is None and allow_none:
        return None
    expected = 'an int >= %d%s' % (minimum, ' or None' if allow_none else '')
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError('%s: %s must be %s, got %r (%s)' % (where, name, expected, value, type(value).__name__))
    if value < minimum:
        raise ValueError('%s: %s must be %s, got %r' % (where, name, expected, _shown(value)))
    return int(value)


def _check_number(where, name, value, low=None, high=None, low_open=False, high_open=False,
                  allow_none=False, hint=''):
    """`value` as a finite Python float within the bounds (or None when `allow_none`).

    `low`/`high` are None (unbounded) or numbers, excluded when `low_open`/`high_open`.
    NumPy numbers count; bools, strings and NaN or infinite values do not. `hint` is
    appended to the ValueError message (e.g. what to use instead).
    """
    if value is None and allow_none:
        return None
    if low is not None and high is not None:
        expected = 'a number in %s%g, %g%s' % ('(' if low_open else '[', low, high, ')' if high_open else ']')
    elif low is not None:
        expected = 'a number %s %g' % ('>' if low_open else '>=', low)
    elif high is not None:
        expected = 'a number %s %g' % ('<' if high_open else '<=', high)
    else:
        expected = 'a finite number'
    expected += ' or None' if allow_none else ''
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError('%s: %s must be %s, got %r (%s)' % (where, name, expected, value, type(value).__name__))
    number = float(value)
    ok = np.isfinite(number)
    if ok and low is not None:
        ok = number > low if low_open else number >= low
    if ok and high is not None:
        ok = number < high if high_open else number <= high
    if not ok:
        raise ValueError('%s: %s must be %s, got %r%s' % (where, name, expected, _shown(value), hint))
    return number


def _shown(value):
    """`np.int64(3)` as 3 in messages."""
    return value.item() if isinstance(value, np.generic) else value
