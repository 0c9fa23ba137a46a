"""
Make this interpreter's rclpy dispatch subscriptions the way ROS 2 Humble's rclpy does.

Put this folder first on PYTHONPATH (the Humble leg of `make test` does) and every Python
process started with it, nodes included, behaves like Humble's rclpy 3.3 where subscription
callbacks are concerned:

- ``Subscription`` has no ``CallbackType`` (the enum came with Iron), and the callback is stored
  as given, without the signature inspection of later releases;
- the executor calls every subscription callback with the message only, never with a
  MessageInfo: a callback that requires a second argument fails with a TypeError, as on Humble.

Humble's rclpy itself cannot be installed here (no cp311 wheels of it); this stand-in changes
exactly that dispatch and nothing else. It does not prove anything about other Humble
differences (the API audit in README lists them).

The patch is applied when ``rclpy.subscription`` / ``rclpy.executors`` are first imported, so
processes that never import rclpy pay nothing.
"""
import importlib.abc
import sys


def _patch_subscription(module) -> None:
    cls = module.Subscription
    if hasattr(cls, 'CallbackType'):
        del cls.CallbackType

    def _get(self):
        return self._callback

    def _set(self, value):
        self._callback = value

    cls.callback = property(_get, _set)


def _patch_executors(module) -> None:
    from rclpy.exceptions import InvalidHandle
    await_or_execute = module.await_or_execute

    def _take_subscription(self, sub):
        try:
            with sub.handle:
                msg_info = sub.handle.take_message(sub.msg_type, sub.raw)
                if msg_info is None:
                    return None
                msg = msg_info[0]

                async def _execute():
                    await await_or_execute(sub.callback, msg)
                return _execute
        except InvalidHandle:
            pass
        return None

    module.Executor._take_subscription = _take_subscription


_PATCHES = {'rclpy.subscription': _patch_subscription, 'rclpy.executors': _patch_executors}


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Find the modules above with the normal finders and patch them once they have run."""

    def find_spec(self, name, path, target=None):
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):
            exec_module(module)
            patch(module)
        spec.loader.exec_module = exec_and_patch
        return spec


sys.meta_path.insert(0, _PatchAfterImport())
