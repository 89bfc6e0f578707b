"""The hand-written mutants of ``bench/mutation.py``: one promised behaviour each, in every package of ``app/``.

A mutant is a textual edit of one source file that breaks one behaviour the docs promise (a safety check,
a bound, a rule of the protocol). ``focus`` names the tests expected to kill it, run first; ``also`` the wider
tests run only when the focus tests all pass (the old groups' whole test sets). The package a mutant counts
for is the one its file lives in (``app/<package>/…``). Why a table and not an operator tool: see the runner.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

ENGINE_TESTS = ("tests/engine/test_llama_backend_trained.py", "tests/engine/test_llama_backend.py",
                "tests/engine/test_incremental.py", "tests/engine/test_llama_backend_unsayable.py")
REWARD_TESTS = ("tests/trainer/test_reward.py",)
PAUC_TESTS = ("tests/eval/test_pauc.py", "tests/eval/test_scoring.py")
# The session store's tests: test_sessions.py, and those of any module split off it (test_session_read.py …).
SESSION_TESTS = tuple(sorted(str(p.relative_to(REPO)) for p in (REPO / "tests/core").glob("test_session*.py")))
GROUP_TESTS = {"engine": ENGINE_TESTS, "reward": REWARD_TESTS, "pauc": PAUC_TESTS, "sessions": SESSION_TESTS}
TRAINED = "tests/engine/test_llama_backend_trained.py::"
EVICTION = f"{TRAINED}test_eviction_removes_oldest_frames_first_then_oldest_silent_turns"
INCREMENTAL = f"{TRAINED}test_incremental_equals_full_history_with_replies_and_silences_kept"
UNSAYABLE = "tests/engine/test_llama_backend_unsayable.py"
PACKAGES = ("core", "engine", "capture", "eval", "trainer", "modelhub", "cli", "ui", "speech", "doctor")


@dataclass(frozen=True)
class Mutant:
    id: str
    group: str  # a name for --only: the package, or one of the first table's groups (engine, reward, pauc, sessions)
    file: str | tuple[str, ...]  # where the code lives (alternatives: the first holding the pattern once)
    find: str | tuple[str, ...]  # must occur exactly once in the file (alternatives: the first that does)
    replace: str | tuple[str, ...]  # one per alternative
    breaks: str  # the behaviour this mutant breaks
    focus: tuple[str, ...] = ()  # tests expected to kill it, run first
    also: tuple[str, ...] | None = None  # run when the focus tests pass; None: the group's tests, if it has any

    def edit(self, source: str) -> str | None:
        """The mutated source, or None when no alternative matches exactly once (a stale pattern)."""
        finds = (self.find,) if isinstance(self.find, str) else self.find
        reps = (self.replace,) if isinstance(self.replace, str) else self.replace
        for f, r in zip(finds, reps, strict=True):
            if source.count(f) == 1:
                return source.replace(f, r)
        return None

    def locate(self, root: Path) -> tuple[str, str] | None:
        """(file, mutated source) in the project at ``root``, or None when the pattern is stale everywhere."""
        for f in (self.file,) if isinstance(self.file, str) else self.file:
            path = root / f
            if path.is_file() and (mutated := self.edit(path.read_text())) is not None:
                return f, mutated
        return None

    @property
    def package(self) -> str:
        """The package of ``app/`` the mutated file belongs to (its first alternative's)."""
        first = self.file if isinstance(self.file, str) else self.file[0]
        return Path(first).parts[1]

    @property
    def later(self) -> tuple[str, ...]:
        """The tests run when the focus tests all pass."""
        if self.also is not None:
            return self.also
        return GROUP_TESTS.get(self.group, ())


E, R, P, S = "app/engine/llama_backend.py", "app/trainer/reward.py", "app/eval/pauc.py", "app/core/sessions.py"
N = "app/engine/llama_native.py"
SR = "app/core/session_read.py"  # load_session, once split off sessions.py
CTRL = "tests/engine/test_controller.py::"
PULL = "tests/modelhub/test_pull.py::"
HOSTILE = "tests/faults/test_hostile_names.py"
LOGS = "tests/faults/test_session_logs.py::"

_FIRST_TABLE: tuple[Mutant, ...] = (
    # --- the engine -------------------------------------------------------------------------------
    Mutant("engine-no-instant-silence", "engine", E,
           ("return int(np.argmax(biased)) == self._no_reply_first", "self.settings.instant_silence and int("),
           ("return False", "False and int("), "silent turns are decided from the first token's logits, without a decode loop",
           (f"{TRAINED}test_instant_silence_decides_as_token_by_token_greedy_decoding",)),
    Mutant("engine-evict-newest-first", "engine", E,
           "closed = [t for t in self.turns if t.end is not None and not t.removed]",
           "closed = [t for t in self.turns if t.end is not None and not t.removed][::-1]",
           "eviction removes the oldest frames and turns first", (EVICTION,)),
    Mutant("engine-evict-dialogue-first", "engine", E, "for dialogue in (False, True):",
           "for dialogue in (True, False):", "silent turns go before turns that carry dialogue", (EVICTION,)),
    Mutant("engine-always-rerender-replies", "engine", E,
           "self.model.tokenize(text_out, parse_special=False) != tokens:", "True:",
           "a canonical reply's tokens stay in the cache as decoded", (INCREMENTAL,)),
    Mutant("engine-talkativeness-sign", "engine", E, "biased[quiet] -= talkativeness",
           "biased[quiet] += talkativeness", "positive talkativeness makes the model speak more",
           ("tests/engine/test_llama_backend.py::test_talkativeness_gives_both_outcomes",)),
    Mutant("engine-unsayable-allowed", "engine", E, "biased[self._unsayable] = -np.inf",
           "pass", "control tokens are never sampled at the decision", (UNSAYABLE,)),
    Mutant("engine-unsayable-in-reply", "engine", E, "logits[self._unsayable] = -np.inf",
           "pass", "control tokens are never sampled after a reply's first token", (UNSAYABLE,)),
    Mutant("engine-unused-sayable", "engine", N, "LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNUSED",
           "LLAMA_TOKEN_ATTR_CONTROL", "unused padding tokens are unsayable too", (UNSAYABLE,)),
    Mutant("engine-end-of-turn-unsayable", "engine", N, " and not self.is_eog(t)]", "]",
           "end-of-turn tokens stay sayable (a reply can end; a turn can be silent by ending at once)",
           (f"{TRAINED}test_instant_silence_decides_as_token_by_token_greedy_decoding",)),
    Mutant("engine-frame-cells-not-freed", "engine", E, "self.n_cells -= sp.cells",
           "self.n_cells -= 0", "evicted frames free their cells", (EVICTION,)),
    Mutant("engine-cut-reply-not-evaluated", "engine", E,
           "self.ctx.decode_tokens([out[-1]], self.n_past, logits_last=False)", "return out",
           "a reply cut at max_new_tokens is in the cache whole",
           ("tests/engine/test_llama_backend.py::test_incremental_gives_same_transcript_as_full_reevaluation",)),
    # --- the GRPO reward -------------------------------------------------------------------------
    Mutant("reward-weights-swapped", "reward", R, "weights.rep * r_rep + weights.in_span * r_in_span",
           "weights.in_span * r_rep + weights.rep * r_in_span", "each weight multiplies its own part"),
    Mutant("reward-default-in-span-weight", "reward", R, "in_span: float = 0.5", "in_span: float = 1.0",
           "the default weights are the run scripts' 3 / 2 / 0.5 / 2"),
    Mutant("reward-in-span-over-replies", "reward", R, "-len(out_replies) / len(out_turns)",
           "-len(out_replies) / max(1, len(out_replies))", "out-of-span replies are divided by out-of-span turns"),
    Mutant("reward-prefix-strict", "reward", R, ">= prefix_chars for p in earlier", "> prefix_chars for p in earlier",
           "a 50-character common prefix is already a repeat"),
    Mutant("reward-no-double-count", "reward", R, "if len(distinct) > 1:", "if False:",
           "2nd and later distinct in-span replies count their repetition verdict twice"),
    Mutant("reward-duplicate-free", "reward", R, "rep_list.append(1.0)", "rep_list.append(0.0)",
           "an exact duplicate counts as a repetition"),
    Mutant("reward-prefix-denominator", "reward", R, "r_pfx = -sum(flags) / len(flags)",
           "r_pfx = -sum(flags) / max(1, sum(1 for _, r in pred if r != NO_REPLY))",
           "the prefix part divides by all turns, NO REPLY included"),
    # --- PAUC --------------------------------------------------------------------------------------
    Mutant("pauc-boundary-exclusive", "pauc", P, "if t <= related_end:", "if t < related_end:",
           "a point at the related end counts as inside it"),
    Mutant("pauc-drop-equal", "pauc", P, "elif score < last_in_related:", "elif score <= last_in_related:",
           "only a strictly lower later point is dropped"),
    Mutant("pauc-omega-reversed", "pauc", P, "x * (1.0 - omega)", "x * omega", "ω shrinks x towards the start"),
    Mutant("pauc-start-score-zero", "pauc", P, "area, prev_x, prev_y = 0.0, 0.0, start_score",
           "area, prev_x, prev_y = 0.0, 0.0, 0.0", "the curve starts at 0.5"),
    Mutant("pauc-span-end-exclusive", "pauc", P, "return span[0] <= time <= span[1]",
           "return span[0] <= time < span[1]", "reply spans include their end"),
    Mutant("pauc-not-cumulative", "pauc", P, "distinct[: i + 1]", "distinct[i : i + 1]",
           "the judge sees all distinct replies so far"),
    Mutant("pauc-no-point-zero", "pauc", P, "        return start_score / max_y\n", "        return 0.0\n",
           "a turn with no point scores 0.25"),
    # --- the session store -------------------------------------------------------------------------
    Mutant("sessions-no-fsync", "sessions", S, "                os.fsync(self.fileno)", "                pass",
           "every record is fsynced (on the helper thread)"),
    Mutant("sessions-no-flush", "sessions", S,
           ("self._fh.flush()  # in the kernel now", "append_whole(self._fh.fileno(), line)",
            "append_whole(self._fh.fileno(), line, fresh_line=True)"),
           ("pass  #", "self._fh.write(line.decode(\"utf-8\"))",
            "self._fh.write(line.decode(\"utf-8\"))"),  # the last two: left in Python's buffer
           "every record is in the kernel before add_* returns (survives a kill)"),
    Mutant("sessions-feedback-no-fsync", "sessions", S,
           ("        os.fsync(fh.fileno())\n", '"utf-8"), fsync=True)', "fsync=True, fresh_line=True)"),
           ("", '"utf-8"), fsync=False)', "fsync=False, fresh_line=True)"),
           "feedback added from the browser is fsynced"),
    Mutant("sessions-feedback-toggle-ignored", "sessions", (SR, S),
           "(kinds.add if m.on else kinds.discard)(m.kind)", "kinds.add(m.kind)",
           "feedback switched off again is off"),
    Mutant("sessions-damaged-line-fatal", "sessions", (SR, S),
           ("                except json.JSONDecodeError:\n                    rec = None\n",
            "        return json.loads(line), False\n    except json.JSONDecodeError:\n        pass\n"),
           ("                except json.JSONDecodeError:\n                    raise\n",
            "        return json.loads(line), False\n    except json.JSONDecodeError:\n        raise\n"),
           "a cut-off last line (killed mid-write) is skipped"),
    Mutant("sessions-mark-glued-onto-a-torn-line", "sessions", "app/core/atomic.py",
           'if fresh_line and size and _last_byte(fd, size) != b"\\n":', "if False:",
           "a mark appended after a torn last line starts a fresh line (else both are lost)",
           ("tests/core/test_sessions.py::test_a_mark_after_a_torn_line_starts_a_fresh_line",)),
    Mutant("sessions-no-end-record", "sessions", S, "self._append({\"type\": \"end\", \"reason\": reason})",
           "pass", "a closed session says how it ended"),
)

# --- issue 24: the hand mutations that survived, now each with the test that kills it ------------------
_ISSUE_24: tuple[Mutant, ...] = (
    Mutant("engine-embed-key-every-other-row", "engine", "app/engine/embed_cache.py",
           'h.update(memoryview(img).cast("B"))', 'h.update(memoryview(np.ascontiguousarray(img[::2])).cast("B"))',
           "the embedding cache keys a frame by all its pixels",
           ("tests/engine/test_embed_cache.py::test_the_key_covers_every_row_column_and_channel",), ()),
    Mutant("engine-guard-misses-loop-ngram", "engine", "app/engine/reply_guard.py",
           "range(1, min(self.loop_ngram, len(tokens)) + 1)", "range(1, min(self.loop_ngram, len(tokens)))",
           "a loop of exactly loop_ngram tokens is a loop",
           ("tests/engine/test_reply_guard.py",), ()),
    Mutant("engine-cadence-drops-carried-lag", "engine", "app/engine/cadence.py",
           "self._lag -= n * self.interval", "self._lag = 0.0",
           "the live cadence carries the part of a frame it did not skip",
           ("tests/engine/test_cadence.py::test_live_carries_the_part_of_a_frame_it_did_not_skip",), ()),
    Mutant("engine-cadence-raises-below-1x", "engine", "app/engine/cadence.py",
           "elif rtf < RAISE_BELOW:", "elif rtf < 1.0:",
           "tokens per frame are raised again only below 0.6× real time (hysteresis)",
           ("tests/engine/test_cadence.py::test_live_tokens_change_only_outside_the_hysteresis_band",), ()),
    Mutant("engine-cadence-lowers-at-1x", "engine", "app/engine/cadence.py",
           "if rtf > 1.0:", "if rtf > 1.3:", "tokens per frame are lowered as soon as a step is slower than real time",
           ("tests/engine/test_cadence.py::test_live_tokens_change_only_outside_the_hysteresis_band",), ()),
    Mutant("engine-turn0-holds-system-prompt", "engine", E,
           "rec = _TurnRecord(index=self.turns_seen, start=turn_start,",
           "rec = _TurnRecord(index=self.turns_seen, start=turn_start if self.turns else 0,",
           "evicting the first turn keeps the system prompt",
           ("tests/engine/test_llama_backend.py::test_evicting_the_first_turn_keeps_the_system_prompt",)),
    Mutant("engine-evict-takes-system-prompt", "engine", E, "self.ctx.remove(t.start, t.end)",
           "self.ctx.remove(0 if t.index == 0 else t.start, t.end)", "eviction never removes the system prompt",
           ("tests/engine/test_llama_backend.py::test_evicting_the_first_turn_keeps_the_system_prompt",)),
    Mutant("engine-gap-to-next-frame", "engine", "app/engine/controller.py",
           "seconds = max(0.0, (resumed_at or time.monotonic()) - paused_at)",
           "seconds = max(0.0, time.monotonic() - paused_at)",
           "a live pause's gap lasts from pause to resume, not to the next frame",
           (f"{CTRL}test_a_live_gap_lasts_from_pause_to_resume_not_to_the_next_frame",), ()),
    Mutant("modelhub-non-lfs-hash-unchecked", "modelhub", "app/modelhub/hub.py",
           "if got != expected:", "if remote.sha256 and got != expected:",
           "small non-LFS files (config.json) are checked by their git blob id",
           (f"{PULL}test_a_small_non_lfs_file_is_checked_by_its_git_hash",), ()),
    Mutant("trainer-good-marks-untouched", "trainer", "app/trainer/session_dialogues.py",
           '| {step_index[m.turn] for m in marks if m.kind == "good" and m.turn in step_index})', ")",
           "a 'good' mark's turn is trained (its window kept)",
           ("tests/trainer/test_feedback_marks.py", "tests/trainer/test_session_dialogues.py"), ()),
)

# --- every other package: its safety checks and promised behaviours ----------------------------------
_PACKAGES: tuple[Mutant, ...] = (
    # core
    Mutant("core-name-dotdot", "core", "app/core/paths.py", 'part in ("", ".", "..") for part',
           'part in ("", ".") for part', "a name with a '..' part is refused before it becomes a path",
           ("tests/core/test_paths.py",), ()),
    Mutant("core-name-absolute", "core", "app/core/paths.py",
           'elif name.startswith("/") or _DRIVE.match(name) or os.path.isabs(name):', "elif _DRIVE.match(name):",
           "an absolute name is refused", ("tests/core/test_paths.py",), ()),
    Mutant("core-bounded-read-one-over", "core", "app/core/bounded.py", "    if len(data) > limit:\n",
           "    if len(data) > limit + 1:\n", "a file one byte over its bound is refused",
           ("tests/core/test_bounded.py",), ()),
    Mutant("core-bounded-not-regular", "core", "app/core/bounded.py", "        if not stat.S_ISREG(st.st_mode):\n",
           "        if False:\n", "a FIFO, a device or a folder is refused, never read",
           ("tests/core/test_bounded.py",), ()),
    Mutant("core-bounded-long-line-kept", "core", "app/core/bounded.py",
           "if len(line) <= max_line or line.endswith(b\"\\n\"):", "if True:",
           "an over-long line is skipped, not held", ("tests/core/test_bounded.py",), ()),
    Mutant("core-atomic-write-in-place", "core", "app/core/atomic.py", "        os.replace(tmp, path)\n",
           "        path.write_bytes(Path(tmp).read_bytes())\n        os.unlink(tmp)\n",
           "a file is replaced whole (a rename), never rewritten in place",
           ("tests/faults/test_disk_full.py", "tests/faults/test_user_files.py", "tests/core/test_settings.py"), ()),
    Mutant("core-escapes-kept", "core", "app/core/textsafe.py", 'return _CONTROLS.sub("", _ESCAPES.sub("", text))',
           'return _CONTROLS.sub("", text)', "escape sequences never reach a terminal",
           ("tests/core/test_textsafe.py",), ()),
    Mutant("core-userinfo-kept", "core", "app/core/textsafe.py", 'return _USERINFO.sub(r"\\1", text)', "return text",
           "a URL's password is removed before it is printed or saved", ("tests/core/test_textsafe.py",), ()),
    Mutant("core-limit-no-upper-bound", "core", "app/core/config.py",
           "not math.isfinite(value) or not self.low <= value <= self.high",
           "not math.isfinite(value) or not self.low <= value", "a setting above its range is refused",
           ("tests/core/test_config.py",), ()),
    Mutant("core-settings-file-unchecked", "core", "app/core/settings.py",
           "LIMITS[section.name, f.name].check(label, value)", "pass",
           "settings.toml values are held to the flags' ranges",
           ("tests/core/test_settings.py", "tests/faults/test_outside_values.py"), ()),
    # engine (beyond llama_backend)
    Mutant("engine-serve-any-bearer", "engine", "app/engine/serve.py",
           'return scheme.lower() == "bearer" and secrets.compare_digest(',
           'return scheme.lower() == "bearer" or secrets.compare_digest(', "duet serve answers only the right key",
           ("tests/engine/test_serve.py",), ()),
    Mutant("engine-remote-redirect-elsewhere", "engine", "app/engine/remote_backend.py",
           "if _origin(target) != _origin(url):", "if False:",
           "a redirect to another server is refused (the API key goes nowhere else)",
           ("tests/engine/test_remote_backend.py",), ()),
    Mutant("engine-remote-escapes-kept", "engine", "app/engine/remote_backend.py",
           "out = terminal_safe(out)  #", "out = out  #", "a remote reply's escape sequences never reach the terminal",
           ("tests/engine/test_remote_backend.py",), ()),
    Mutant("engine-allow-files-prefix", "engine", "app/engine/serve_policy.py", "if not path.is_relative_to(root):",
           "if not str(path).startswith(str(root)):", "--allow-files serves its folder only, not a sibling sharing its prefix",
           ("tests/faults/test_serve_paths.py",), ()),
    Mutant("engine-url-connects-to-name", "engine", "app/engine/serve_policy.py",
           "socket.create_connection((allowed[0], port),", "socket.create_connection((host, port),",
           "an image URL is fetched from the address that was checked (no DNS rebinding)",
           ("tests/faults/test_serve_paths.py",), ()),
    # capture
    Mutant("capture-pause-leaks-into-clock", "capture", "app/capture/pacing.py",
           "self._start += self._clock() - self._paused_at", "self._start += 0.0",
           "a paused clock stands still: resuming continues from the same moment",
           ("tests/capture/test_pacing.py",), ()),
    Mutant("capture-double-token-budget", "capture", "app/capture/resize.py",
           "max_pixels=max_pixels_for(tokens_per_frame)", "max_pixels=max_pixels_for(2 * tokens_per_frame)",
           "a frame is resized within its token budget", ("tests/capture/test_resize.py",), ()),
    Mutant("capture-thin-strip-squashed", "capture", "app/capture/resize.py",
           "    if max(h, w) / min(h, w) > MAX_ASPECT:\n", "    if False:\n",
           "a strip beyond 1:200 is centre-cropped, not squashed", ("tests/capture/test_resize.py",), ()),
    Mutant("capture-region-zero-size", "capture", "app/capture/parse.py", "if w <= 0 or h <= 0:",
           "if w < 0 or h < 0:", "a region of zero width or height is refused", ("tests/capture/test_parse.py",), ()),
    # eval
    Mutant("eval-score-off-scale", "eval", "app/eval/judges.py", 's[0] in "123"', 's[0] in "0123456789"',
           "a judge's rating off the 1–3 scale is no score", ("tests/eval/test_judges.py",), ()),
    Mutant("eval-cache-key-ignores-prediction", "eval", "app/eval/judges.py",
           "self.gold, self.prediction, list(self.previous)", "self.gold, list(self.previous)",
           "cached verdicts are keyed by the prediction judged", ("tests/eval/test_judges.py",), ()),
    Mutant("eval-overlap-mostly-strict", "eval", "app/eval/judges.py", "return 2 if f1 >= self.mostly",
           "return 2 if f1 > self.mostly", "an F1 at the 'mostly' threshold scores 2", ("tests/eval/test_judges.py",), ()),
    # trainer
    Mutant("trainer-user-tokens-trained", "trainer", "app/trainer/encode.py",
           "labels.extend(toks if train else [-100] * len(toks))", "labels.extend(toks)",
           "only the assistant turns are trained", ("tests/trainer/test_encode.py",), ()),
    Mutant("trainer-marks-not-in-digest", "trainer", "app/trainer/feedback_job.py",
           '            h.update(json.dumps(m.to_record() | {"wall": 0}, sort_keys=True).encode())\n', "            pass\n",
           "a changed mark invalidates a feedback job's checkpoints", ("tests/trainer/test_feedback_marks.py",), ()),
    # modelhub
    Mutant("modelhub-hub-name-unchecked", "modelhub", "app/modelhub/hub.py",
           'return plain_relative_name(name, "file name")', "return name",
           "a hub's file name is a plain relative name inside its folder", (HOSTILE,), ()),
    Mutant("modelhub-library-name-prefix", "modelhub", "app/modelhub/library.py", "not _NAME.fullmatch(name)",
           "not _NAME.match(name)", "a library name is a whole folder name (no slashes, no '..')",
           (HOSTILE, "tests/modelhub/test_library.py"), ()),
    Mutant("modelhub-pull-name-late", "modelhub", "app/modelhub/pull.py",
           "self.name = check_name(name or default_name(repo, quant))", "self.name = name or default_name(repo, quant)",
           "pull --name is checked before anything is fetched or moved", (HOSTILE,), ()),
    # cli
    Mutant("cli-sessions-list-escapes", "cli", "app/cli/sessions.py", 'print(terminal_safe(f"{s.id}',
           'print((f"{s.id}', "`duet sessions list` prints no escape sequences",
           (f"{LOGS}test_escape_sequences_never_reach_the_terminal", "tests/cli/test_sessions.py"), ()),
    Mutant("cli-feedback-at-past-the-end", "cli", "app/cli/sessions.py", "not 0 <= value <= end + 1e-6",
           "not 0 <= value", "--at past the session's end is refused",
           ("tests/faults/test_outside_values.py", "tests/cli/test_sessions.py"), ()),
    Mutant("cli-run-prints-password", "cli", "app/cli/run.py",
           'model = f"{served} at {without_userinfo(a.remote)}"', 'model = f"{served} at {a.remote}"',
           "a --remote URL's password is never recorded or printed",
           (f"{LOGS}test_a_remote_password_is_never_recorded_printed_or_exported",), ()),
    Mutant("cli-serve-cors-star", "cli", "app/cli/serve.py", "    if bad_origin is not None:",
           "    if False:", "--cors-origin '*' (or any non-origin) is refused", ("tests/faults/test_network.py",), ()),
    # ui
    Mutant("ui-reply-escapes-shown", "ui", "app/ui/reply_text.py", "    text = terminal_safe(text)\n", "",
           "a reply shows no escape sequences or control characters", ("tests/ui/test_reply_text.py",), ()),
    Mutant("ui-repeated-run-kept", "ui", "app/ui/reply_text.py", "for n in range(len(words) // 2, 1, -1):",
           "for n in range(0):", "a run of words said twice in a row is shown once", ("tests/ui/test_reply_text.py",), ()),
    Mutant("ui-fold-different-meaning", "ui", "app/ui/dedup.py",
           "return bool(wa) and len(wa) == len(wb) and all(", "return bool(wa) and len(wa) == len(wb) or all(",
           "the overlay folds only true repeats", ("tests/ui/test_overlay_fold.py",), ()),
    # speech
    Mutant("speech-stale-line-spoken", "speech", "app/speech/tts.py",
           "if time.monotonic() - line.queued > self.max_age:", "if False:",
           "a line that waited longer than max_age is dropped, not read out late", ("tests/speech/test_tts.py",), ()),
    Mutant("speech-waiting-line-not-superseded", "speech", "app/speech/tts.py",
           "            old = self._slot\n            self._serial += 1\n",
           "            old = None\n            self._serial += 1\n",
           "a newer reply supersedes the waiting one, and says so", ("tests/speech/test_tts.py",), ()),
    Mutant("speech-muted-speaks", "speech", "app/speech/tts.py",
           '        if self.muted:\n            self._emit("muted", text)\n            return\n', "",
           "a muted speaker speaks nothing", ("tests/speech/test_tts.py",), ()),
    # doctor
    Mutant("doctor-warning-fails", "doctor", "app/doctor/checks.py", "return any(c.ok is False for c in checks)",
           "return any(not c.ok for c in checks)", "warnings do not make `duet doctor` fail",
           ("tests/cli/test_doctor.py",), ()),
    Mutant("doctor-failure-passes", "doctor", "app/doctor/checks.py", "return any(c.ok is False for c in checks)",
           "return False", "`duet doctor` exits 1 when a check failed", ("tests/cli/test_doctor.py",), ()),
    Mutant("doctor-x86-level-skips-a-gap", "doctor", "app/doctor/checks.py",
           "        if not need <= flags:\n            break\n", "        if not need <= flags:\n            continue\n",
           "the x86-64 level is the highest whose flags, and every lower level's, are present",
           ("tests/doctor/test_checks.py::test_x86_levels",), ()),
    Mutant("doctor-raising-check-escapes", "doctor", "app/doctor/checks.py",
           "    except Exception as e:  # noqa: BLE001 - one broken check", "    except ZeroDivisionError as e:  #",
           "a check that raises becomes a failed check; the others still report",
           ("tests/doctor/test_checks.py::test_a_check_that_raises_becomes_a_failed_check",), ()),
)

# The newest first: a run cut short has judged the mutants that were never run before.
MUTANTS: tuple[Mutant, ...] = _ISSUE_24 + _PACKAGES + _FIRST_TABLE
