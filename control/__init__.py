"""The control plane's core: actor/worker model, lifecycle, controller and policies.

Everything in this package is pure: no I/O, no clock reads, no global state. The
simulator (``sim``) and the real backends (``backends``) drive the same
:class:`control.controller.Controller` by passing it events with the current time and
carrying out the commands it returns.
"""
