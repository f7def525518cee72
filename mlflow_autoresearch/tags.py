"""Every MLflow tag, metric and artifact key this project writes, defined once.

Users' filter strings and benchmarks depend on these exact names (the README's trial contract);
change one only with a schema bump and a patch in `store._records.trial_from_run`.
"""

# Schema 2: proposals' own tags and metrics moved under AGENT_TAG_PREFIX / AGENT_METRIC_PREFIX,
# the `trial` metric, the campaign lease, retries, and the verdict written in one final batch.
SCHEMA = "2"

PREFIX = "autoresearch."

# Experiment tags.
KIND = "autoresearch.kind"            # CAMPAIGN or EVALUATIONS
CAMPAIGN_KIND = "campaign"
EVALUATIONS_KIND = "evaluations"      # `autoresearch evaluate`: never a campaign's trials
# On a run (not a trial) in a campaign's experiment: what else it is. Never carries LABEL or TRIAL,
# so no trial query ever counts it.
REPORT_KIND = "report"                # `autoresearch report`: one per campaign, replaced each time
REPLAY_KIND = "replay"                # `autoresearch replay`: a trial's recipe measured again
REPLAY_OF = "autoresearch.replay_of"  # on a replay run: the trial run it measured again
REPLAY_LABEL = "autoresearch.replay.label"  # the replay's label (a trial's LABEL tag, renamed)
MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"  # the UI's view of the experiment
MODEL_TRAINING = "custom_model_development"       # its model-training view (not GenAI's)
# A saved view of the runs table (columns, order, charts), opened by the URL query
# `viewStateShareKey=<key>`: MLflow 3.17 shows no metric, param or tag column by default.
MLFLOW_VIEW_PREFIX = "mlflow.sharedViewState."
VIEW_KEY = "autoresearch"
DIRECTION = "autoresearch.direction"  # minimize or maximize
SCORE_METRIC = "autoresearch.score_metric"  # the evaluator's metric the score is
LEASE_HOLDER = "autoresearch.lease.holder"        # "token=<hex> host=<name> pid=<n>"
LEASE_HEARTBEAT = "autoresearch.lease.heartbeat"  # unix seconds of the holder's last beat
# The paper's controls, on the campaign's experiment and on every one of its trials.
CONTROL_LINEAGE = "autoresearch.control.lineage"  # on | off
CONTROL_ROSTER = "autoresearch.control.roster"    # specialists | single | generic
# The confirmation seeds a campaign started with, comma-separated ("" for none): fixed like the
# controls, so every kept score is a mean over the same seeds.
CONFIRM_SEEDS = "autoresearch.confirm_seeds"
STRATEGY = "autoresearch.strategy"  # specialists | random | optuna: who proposes the trials
CONTROL_DEFAULTS = {CONTROL_LINEAGE: "on", CONTROL_ROSTER: "specialists", CONFIRM_SEEDS: "",
                    STRATEGY: "specialists"}
MIN_DELTA = "autoresearch.min_delta"                # the keep margin in force
MIN_DELTA_SOURCE = "autoresearch.min_delta.source"  # spec | measured
SCORE_STD = "score_std"        # on the baseline run: the std of its repeated scores
NOISE_REPEATS = "noise_repeats"  # how many runs of the whole seed set measured it
NOISE_SCORE = "noise_score"    # each repeat's score, one step per repeat

# Trial tags, set by the store at the start of a trial (with the proposal) or at its end.
SCHEMA_VERSION = "autoresearch.schema"
ENVIRONMENT = "autoresearch.environment"
CAMPAIGN = "autoresearch.campaign"
PROFILE = "autoresearch.profile"
SANDBOX = "autoresearch.sandbox"  # bwrap | none: what isolated the trial's recipe code
TIME_BASIS = "autoresearch.time_basis"  # cpu | wall: how the environment's time scores count
TRIAL = "autoresearch.trial"
SPECIALIST = "autoresearch.specialist"
HYPOTHESIS = "autoresearch.hypothesis"
EXPECTED_DELTA = "autoresearch.expected_delta"
NOTES = "autoresearch.notes"
PARENT = "autoresearch.lineage.parent"
LINEAGE_PATH = "autoresearch.lineage.path"
DIFF_SHA = "autoresearch.diff.sha256"
LEASE_TOKEN = "autoresearch.lease.token"  # the token of the loop that opened the trial
RETRY_OF = "autoresearch.retry_of"  # the harness_abort trial whose proposal this one re-runs
EXECUTOR = "autoresearch.executor"  # local | ray: what ran the trial
NODE = "autoresearch.node"          # the host name, or the Ray node id, it ran on
SLOT = "autoresearch.slot"          # the local executor's slot (cores, GPUs) it held
WHERE = {"executor": EXECUTOR, "node": NODE, "slot": SLOT}  # `TrialResult.where` keys -> tags
# The surface audit: which owners' knobs, symbols and files the diff changed, and whether they
# are all the specialist's own (true | false | unknown when the environment declares no surfaces).
AUDIT_TOUCHED = "autoresearch.audit.touched"
AUDIT_IN_DOMAIN = "autoresearch.audit.in_domain"
PID = "autoresearch.pid"            # the process group running now, "<pgid>@<start ticks>"
# Written only in the final batch: a run holding LABEL is a recorded trial result.
LABEL = "autoresearch.label"
DECISION = "autoresearch.decision"
CONFIRM = "autoresearch.confirm"  # passed | failed: a would-be keep re-run on more seeds
EXCERPT = "autoresearch.excerpt"
# A proposal's own tags and metrics live under these, so they can never override the harness's
# or the evaluator's (an LLM specialist's model is `autoresearch.agent.model`).
AGENT_TAG_PREFIX = "autoresearch.agent."
AGENT_METRIC_PREFIX = "agent."
# MLflow's own keys we set on purpose: the UI's run tree becomes the lineage tree.
MLFLOW_PARENT = "mlflow.parentRunId"
MLFLOW_NOTE = "mlflow.note.content"
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_ENTRY_POINT = "mlflow.project.entryPoint"  # the entry point each seed runs

# Metrics.
TRIAL_NUMBER = "trial"  # the trial number again, as a number: numbering reads max(trial)
SCORE = "score"  # with confirmation seeds, the seed-weighted mean of the two below
SCORE_SEARCH = "score_search"    # the score on the search seeds alone
SCORE_CONFIRM = "score_confirm"  # the score on the confirmation seeds alone
CONFIRM_METRIC_PREFIX = "confirm."  # the evaluator's metrics on the confirm seeds
FAILURE_CODE = "failure_code"
DELTA_VS_BEST = "delta_vs_best"
DIFF_LINES = "diff_lines"
HARNESS_SECONDS = "harness_seconds"
TRIAL_SECONDS = "trial_seconds"
# LLM specialists' usage, per trial (a proposal's metrics, logged under AGENT_METRIC_PREFIX).
LLM_INPUT_TOKENS = "llm_input_tokens"
LLM_OUTPUT_TOKENS = "llm_output_tokens"
LLM_CACHED_INPUT_TOKENS = "llm_cached_input_tokens"
LLM_COST_USD = "llm_cost_usd"
LLM_ATTEMPTS = "llm_attempts"
LLM_SECONDS = "llm_seconds"

# On the report run: the best score after each trial, step = trial number.
BEST_SCORE = "best_score"
KEPT_METRIC = "kept"  # on every recorded trial: 1 for a keep or the baseline, else 0

# Artifacts, relative to the run's artifact root.
ARTIFACT_DIR = "trial"
PATCH = "trial/patch.diff"
PATCH_PREVIEW = "trial/patch.diff.txt"
RECIPE_DIR = "trial/recipe"
EVALUATION = "trial/evaluation.json"
LOGS_DIR = "trial/logs"
CONTEXT = "trial/context.md"
REPORT_DIR = "report"  # the report run's figures, report.md and lineage.html

# MLflow's cap on a tag value; lineage paths keep their newest ~240 run ids under it.
MAX_TAG_CHARS = 8000
