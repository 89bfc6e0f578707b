"""One stylesheet for the whole app: a calm dark theme where the chat is what the eye lands on."""

from app.core.assets import assets_dir

STYLE = """
QMainWindow, QDialog { background: #14161c; }
QWidget { color: #e6e8ee; font-size: 13px; }
QTabWidget::pane { border: none; }
QTabBar::tab { background: transparent; color: #8a93a6; padding: 8px 18px; border: none; font-weight: 600; }
QTabBar::tab:selected { color: #ffffff; border-bottom: 2px solid #5b8cff; }
QFrame#sidePanel { background: #1b1e26; border-radius: 12px; }
QLabel#sectionTitle { color: #8a93a6; font-size: 11px; font-weight: 700; letter-spacing: 1px; }
QLabel#sourceName { font-size: 15px; font-weight: 600; }
QLabel#preview { background: #0b0c10; border-radius: 10px; color: #596070; }
QLabel#banner { background: #3a1d22; color: #ffb4b4; border-radius: 8px; padding: 8px 12px; }
QLabel#watching { color: #ff5c6c; font-weight: 700; }
QPushButton { background: #262a35; border: 1px solid #323745; border-radius: 8px; padding: 7px 14px; }
QPushButton:hover { background: #2e3340; }
QPushButton:disabled { color: #5b6170; background: #1e2129; }
QPushButton#primary { background: #3d6df2; border: none; color: white; font-weight: 600; }
QPushButton#primary:hover { background: #4d7bff; }
QPushButton#primary:disabled { background: #27314d; color: #7c86a0; }
QPushButton#danger { background: #4a2028; border: none; color: #ffd0d5; }
QPushButton#danger:disabled { background: #1e2129; color: #5b6170; }
QPushButton#talk:checked { background: #c0303f; color: white; }
QLineEdit, QComboBox, QSpinBox, QDoubleSpinBox, QKeySequenceEdit {
  background: #10121a; border: 1px solid #2c313d; border-radius: 8px; padding: 6px 8px; }
QLineEdit:focus { border: 1px solid #5b8cff; }
/* Styling a spin box's frame drops the platform's buttons to a few pixels with no arrows: draw them here
   (the arrows: assets/icons/arrow-*.svg). */
QSpinBox, QDoubleSpinBox { padding-right: 22px; }
QSpinBox::up-button, QDoubleSpinBox::up-button, QSpinBox::down-button, QDoubleSpinBox::down-button {
  subcontrol-origin: border; width: 20px; background: #1b1e26; border-left: 1px solid #2c313d; }
QSpinBox::up-button, QDoubleSpinBox::up-button { subcontrol-position: top right; border-top-right-radius: 8px; }
QSpinBox::down-button, QDoubleSpinBox::down-button { subcontrol-position: bottom right;
  border-bottom-right-radius: 8px; }
QSpinBox::up-button:hover, QDoubleSpinBox::up-button:hover, QSpinBox::down-button:hover,
QDoubleSpinBox::down-button:hover { background: #2e3340; }
QSpinBox::up-arrow, QDoubleSpinBox::up-arrow { image: url(ICONS/arrow-up.svg); width: 10px; height: 8px; }
QSpinBox::down-arrow, QDoubleSpinBox::down-arrow { image: url(ICONS/arrow-down.svg); width: 10px; height: 8px; }
QSpinBox::up-arrow:disabled, QDoubleSpinBox::up-arrow:disabled { image: url(ICONS/arrow-up-off.svg); }
QSpinBox::down-arrow:disabled, QDoubleSpinBox::down-arrow:disabled { image: url(ICONS/arrow-down-off.svg); }
QScrollArea#chat { background: #111318; border: none; border-radius: 12px; }
/* A page that scrolls (Models) shows the window's dark background, not the palette's light base. */
QScrollArea#pageScroll, QScrollArea#pageScroll > QWidget#qt_scrollarea_viewport, QWidget#modelPage {
  background: transparent; border: none; }
QWidget#chatInner { background: #111318; }
QFrame#replyBubble { background: #1f2330; border-radius: 12px; }
QFrame#questionBubble { background: #23345e; border-radius: 12px; margin-left: 80px; }
QFrame#systemBubble { background: transparent; border: 1px dashed #3a3f4d; border-radius: 10px; }
QLabel#bubbleText { font-size: 14px; line-height: 130%; }
QLabel#thumb { border-radius: 6px; }
QToolButton#feedbackButton { background: transparent; color: #6f7789; border: 1px solid #2f3443;
  border-radius: 9px; padding: 1px 7px; font-size: 11px; }
QToolButton#feedbackButton:checked { background: #5a4316; color: #ffd27a; border-color: #8a6a22; }
QSlider::groove:horizontal { height: 4px; background: #2c313d; border-radius: 2px; }
QSlider::handle:horizontal { background: #5b8cff; width: 14px; margin: -6px 0; border-radius: 7px; }
QStatusBar { background: #101218; color: #8a93a6; }
QStatusBar QLabel { color: #8a93a6; padding: 0 8px; }
QListWidget, QTableWidget, QTextBrowser { background: #111318; border: none; border-radius: 10px; }
QListWidget::item { padding: 6px; border-radius: 6px; }
QListWidget::item:selected, QTableWidget::item:selected { background: #2a3550; }
QHeaderView::section { background: #1b1e26; color: #8a93a6; border: none; padding: 6px; }
QGroupBox { border: 1px solid #2a2e3a; border-radius: 10px; margin-top: 20px; padding: 14px 8px 8px 8px;
  font-weight: 600; }
QGroupBox::title { subcontrol-origin: margin; subcontrol-position: top left; left: 12px; padding: 0 6px;
  color: #8a93a6; }
QTableWidget::item { padding: 4px 8px; }
QLabel#hint { color: #8a93a6; font-size: 12px; }
/* Every list a dialog can show gets the dark base: Qt's own default is a white base, and the light
   text colour above would sit on it at a contrast of 1.2:1 (the model drop-down, the file dialog). */
QComboBox QAbstractItemView { background: #1b1e26; color: #e6e8ee; border: 1px solid #2c313d;
  selection-background-color: #2a3550; selection-color: #ffffff; outline: none; }
QTreeView, QListView, QTableView, QColumnView { background: #111318; color: #e6e8ee;
  alternate-background-color: #161922; selection-background-color: #2a3550; selection-color: #ffffff; }
QFileDialog QLineEdit, QFileDialog QComboBox { color: #e6e8ee; }
QMenu { background: #1b1e26; color: #e6e8ee; border: 1px solid #2c313d; }
QMenu::item:selected { background: #2a3550; }
/* Qt's own indicator draws a pale tick on a white box: on the dark theme "on" and "off" look alike. */
QCheckBox::indicator { width: 14px; height: 14px; border: 1px solid #5b6170; border-radius: 4px; background: #10121a; }
QCheckBox::indicator:checked { background: #3d6df2; border-color: #5b8cff; }
QCheckBox::indicator:disabled { background: #1e2129; border-color: #323745; }
QToolTip { background: #23262f; color: #e6e8ee; border: 1px solid #3a3f4d; }
/* Every progress bar (downloads, training) and scroll bar in the theme: Qt's own are a white track. */
QProgressBar { background: #10121a; border: 1px solid #2c313d; border-radius: 6px; text-align: center;
  color: #e6e8ee; min-height: 18px; }
QProgressBar::chunk { background: #3d6df2; border-radius: 5px; }
QScrollBar:vertical { background: transparent; width: 10px; margin: 0; }
QScrollBar:horizontal { background: transparent; height: 10px; margin: 0; }
QScrollBar::handle { background: #323745; border-radius: 5px; min-height: 24px; min-width: 24px; }
QScrollBar::handle:hover { background: #434a5c; }
QScrollBar::add-line, QScrollBar::sub-line { width: 0; height: 0; }
QScrollBar::add-page, QScrollBar::sub-page { background: transparent; }
""".replace("ICONS", (assets_dir() / "icons").as_posix())
