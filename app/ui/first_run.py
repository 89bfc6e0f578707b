"""The first-run wizard: what Duet does, the offline models, getting MMDuet2, permissions, voice, and a
check of this computer (``duet doctor``'s, on the last page, on request).

Shown once, before the main window, when the settings have ``setup.first_run_done = false`` (a fresh
config). Everything it sets lands in the same settings file the app uses; the MMDuet2 download it
starts is an app-wide pull (:mod:`app.modelhub.jobs`), so the Models page shows its progress.
"""

from __future__ import annotations

import sys

from PySide6.QtWidgets import QCheckBox, QLabel, QVBoxLayout, QWizard, QWizardPage

from app.core.errors import describe_write_failure
from app.core.settings import Settings, SettingsStore
from app.core.sizes import human_bytes
from app.modelhub import catalog, hardware
from app.modelhub.jobs import PullManager, manager
from app.modelhub.library import ModelLibrary
from app.ui.doctor_panel import DoctorPanel
from app.ui.style import STYLE


def permission_notes(platform: str = sys.platform) -> str:
    """What the operating system asks before Duet may see the screen or the camera."""
    if platform == "darwin":
        return ("macOS asks once for each: allow Duet (or your terminal) in System Settings › Privacy & Security › "
                "Screen Recording to watch the screen, and › Camera to use a webcam. Restart Duet after allowing.")
    if platform.startswith("win"):
        return ("Windows: Settings › Privacy & security › Camera must allow desktop apps to use the camera. "
                "Screen capture needs no permission.")
    return ("Linux: watching the screen works on X11 and, under Wayland, through XWayland (Duet starts itself "
            "that way). A webcam is /dev/video*: your user must be in the “video” group "
            "(sudo usermod -aG video $USER, then log in again).")


def _page(title: str, text: str) -> tuple[QWizardPage, QVBoxLayout]:
    page = QWizardPage()
    page.setTitle(title)
    lay = QVBoxLayout(page)
    label = QLabel(text)
    label.setWordWrap(True)
    lay.addWidget(label)
    return page, lay


class FirstRunWizard(QWizard):
    """Four pages; ``accept()`` saves the choices and marks the first run done (so does cancelling)."""

    def __init__(self, store: SettingsStore, library: ModelLibrary | None = None,
                 jobs: PullManager | None = None, hw: hardware.Hardware | None = None) -> None:
        super().__init__()
        self.store = store
        self.settings: Settings = store.load()
        self.save_problem = ""  # why the choices could not be saved, for the main window's banner
        self.library = library or ModelLibrary()
        self.jobs = jobs or manager()
        self.hw = hw or hardware.detect()
        self.rec = hardware.recommend(self.hw)
        self.setWindowTitle("Welcome to Duet")
        # The window's dark theme from the first screen on (Modern style paints its own white header).
        self.setWizardStyle(QWizard.WizardStyle.ClassicStyle)
        self.setStyleSheet(STYLE + "QWizard, QWizardPage { background: #14161c; }")
        self.resize(640, 460)

        page, _ = _page("What Duet does",
                        "Duet watches your screen, a window, a webcam or a video with you and speaks up by itself "
                        "when something is worth saying — and stays quiet otherwise. Ask it questions at any time, "
                        "by typing or by voice. Everything runs on this computer; nothing leaves it unless you "
                        "download a model.")
        self.addPage(page)

        demo = self.library.get("demo")
        demo_text = ("The offline demo model is installed: it runs without a network, on the CPU, and talks about "
                     "coloured shapes appearing and changing, as in the synthetic videos `duet eval make-synthetic` makes." if demo else
                     "The offline demo model is not built yet: `make run` (or `duet train demo`) builds it in "
                     "about five minutes, without a network. It only knows the coloured shapes of the demo videos.")
        page, _ = _page("Models on this computer",
                        demo_text + " For real screens, cameras and videos you want MMDuet2 (next page).")
        self.addPage(page)

        item = catalog.MMDUET2
        lines = "<br>".join(hardware.describe(self.hw))
        hint = hardware.switch_hint(self.hw)
        page, lay = _page("Get MMDuet2",
                          f"{item.about}<br><br><b>This machine</b><br>{lines}<br><br>"
                          f"<b>Recommended</b>: {self.rec.quant} on {self.rec.device} — "
                          f"{catalog.fits(self.hw, self.rec.quant) != 'no' and 'fits' or 'does not fit'}; "
                          f"{human_bytes(item.download_bytes)} to download, {human_bytes(item.size(self.rec.quant))} on disk "
                          f"afterwards.<br>" + "<br>".join(f"· {r}" for r in self.rec.reasons if r != hint)
                          + (f"<br><br>{hint}" if hint else ""))
        self.get_mmduet2 = QCheckBox(f"Download MMDuet2 ({self.rec.quant}) now — progress in the Models tab; "
                                     "you can pause it there")
        self.get_mmduet2.setChecked(False)
        lay.addWidget(self.get_mmduet2)
        self.addPage(page)

        page, lay = _page("Permissions and voice", permission_notes())
        self.voice = QCheckBox("Speak replies aloud (you can mute at any time with Ctrl+Shift+M)")
        self.voice.setChecked(not self.settings.speech.muted)
        lay.addWidget(self.voice)
        # The permissions and the sound this page talks about, checked for real (and the CPU, GPU and model).
        self.doctor = DoctorPanel(page)
        lay.addWidget(self.doctor)
        self.addPage(page)

    def done(self, result: int) -> None:
        """Save on finish and on cancel alike: the wizard is shown once."""
        self.settings.speech.muted = not self.voice.isChecked()
        self.settings.setup.first_run_done = True
        try:
            self.store.save(self.settings)
        except OSError as e:  # a full disk: the app still starts, and its window shows this
            self.save_problem = describe_write_failure(e, "Your first-run choices could not be saved",
                                                       "Duet starts anyway and asks them again next time")
        if result and self.get_mmduet2.isChecked():
            self.jobs.start(catalog.MMDUET2.repo, self.rec.quant, library=self.library)
        super().done(result)


def should_show(store: SettingsStore) -> bool:
    return not store.load().setup.first_run_done
