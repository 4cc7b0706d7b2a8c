"""The Scene tab of tinyserve-gui: `SceneTab` (tab.py). Importing this package is cheap;
torch, the scene core and OpenGL load when the tab is first shown."""

from .tab import SceneTab

__all__ = ["SceneTab"]
