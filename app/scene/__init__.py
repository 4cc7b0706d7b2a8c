"""The Scene tab of tinyserve-gui: `SceneTab` (tab.py: layout, wiring, lifecycle; its
jobs in camera_control, overlay, find_control, plan_control, train_control and
export_control). Importing this package is cheap; torch, the scene core and OpenGL load
when the tab is first shown."""

from .tab import SceneTab

__all__ = ["SceneTab"]
