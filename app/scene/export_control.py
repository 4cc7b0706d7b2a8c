"""The Scene tab's export buttons: a save dialog per kind, the file written by
`exports.py` (path JSON/CSV, query log) or by Qt's `grab()` (render PNG) and the 3D
view (its PNG); a failure is shown in the export panel, never raised into Qt.

A mixin of `SceneTab` (tab.py): it reads `frame`, `view`, `view3d`, `plan_result`,
`query_log` and `scene`, and reports in `export_panel` and `status_message`."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog

from tinyserve_core.errors import TinyServeError


class ExportControl:
    def export_render_png(self, path) -> Path:
        from tinyserve_core.errors import InputFileError

        if self.frame is None or not self.view.grab().save(str(path), "PNG"):
            raise InputFileError(str(path), None, "could not write the render view's image")
        return Path(path)

    def export_3d_png(self, path) -> Path:
        return self.view3d.save_png(path)

    def export_path_json(self, path) -> Path:
        from .exports import write_path_json

        return write_path_json(path, self.plan_result, self.scene)

    def export_path_csv(self, path) -> Path:
        from .exports import write_path_csv

        return write_path_csv(path, self.plan_result)

    def export_query_log(self, path) -> Path:
        from .exports import write_query_log

        return write_query_log(path, self.query_log)

    def _export_dialog(self, what: str, filt: str, fn):
        path, _ = QFileDialog.getSaveFileName(self, f"Export {what}", "", filt)
        if not path:
            return
        try:
            out = fn(path)
        except (TinyServeError, OSError) as e:
            self.export_panel.status.setText(f"<span style='color:#e0473c'>{e}</span>")
            return
        self.export_panel.status.setText(f"wrote {out}")
        self.status_message.emit(f"wrote {out}", 5000)
