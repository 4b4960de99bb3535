"""The ``algo:`` section of a Verity config: which advantage estimator, policy loss, regularisers and reward
shapers one training run uses.

The defaults give plain GRPO (group mean/std advantages, PPO clip at 0.2, token-mean aggregation, no KL, no
entropy bonus). Each field is documented once, here; ``docs/algorithms.md`` maps every option to its paper.
The math in ``verity.algo`` never sees this object: ``verity.algo.objective`` unpacks it into numbers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails

from verity.algo.contract import ESTIMATOR_KEYS
from verity.algo.registry import ESTIMATORS, resolve_estimator, resolve_loss
from verity.registry import validated

Aggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "constant"]


class AlgoConfig(BaseModel):
    """Algorithm settings. Keys beyond these fields are the configured estimator's own settings (its
    ``settings`` model validates them); any other key is an error that names it."""

    model_config = ConfigDict(extra="allow")
    _estimator_settings: Any = PrivateAttr(None)

    # --- advantage estimation -------------------------------------------------------------------------------
    advantage: str = Field(
        "grpo",
        description="Advantage estimator: a registered name or a user's 'package.module:estimator' (see "
        "verity/algo/contract.py). docs/algorithms.md describes each built-in one with its paper; an estimator "
        "with settings of its own (pass_k, single_rollout, w_reinforce) reads them from further keys of this "
        "section, listed under it in docs/config.md, and refuses them under another estimator.",
    )
    adv_eps: float = Field(1e-6, gt=0, description="Added to standard deviations before dividing by them.")
    gamma: float = Field(1.0, ge=0, le=1, description="Discount over tokens (gae, reinforce_pp) or turns (trloo).")
    gae_lambda: float = Field(1.0, ge=0, le=1, description="GAE lambda: 1 gives Monte-Carlo returns minus V.")
    gae_whiten: bool = Field(True, description="Whiten GAE advantages over the batch's masked tokens.")
    positive_scale: float = Field(
        1.0,
        ge=0,
        description="Scale of positive advantages (negative ones keep theirs), after any estimator: below 1, "
        "learning comes mostly from pushing down wrong answers. Not the paper's W-REINFORCE, which is "
        "algo.advantage=w_reinforce (no baseline); at 0.1 beside GRPO this collapsed every run on the tiny base "
        "to its majority answer (docs/families.md). 1 disables it.",
    )
    adv_outlier_sigma: float | None = Field(
        None,
        gt=0,
        description="StableReinforce advantage filter: zero the advantage of samples whose batch z-score exceeds "
        "this many standard deviations (3.0 in the paper). None disables it.",
    )
    rareness_alpha: float = Field(
        0.0,
        ge=0,
        description="CalibRL-style rareness weighting: scale each sample's advantage by (1/p)^alpha normalised "
        "to mean 1 in its group, p = share of the group with the same reward. 0 disables it.",
    )
    entropy_adv_alpha: float = Field(
        0.0,
        ge=0,
        description="Entropy-based advantage shaping (MSSR): A' = A + min(alpha * H_t, |A| / kappa), H_t the "
        "detached token entropy. 0 disables it; needs the learner to pass entropy.",
    )
    entropy_adv_kappa: float = Field(
        2.0,
        gt=1,
        description="Cap divisor kappa of entropy advantage shaping, > 1: the bonus is at most |A| / kappa, so a "
        "negative advantage stays negative (kappa <= 1 could flip it).",
    )

    critic: Literal["policy", "separate"] = Field(
        "separate",
        description="gae critic: a value head on the policy's own backbone (kept frozen for the critic; only "
        "the head trains) or a separate model that trains whole.",
    )
    critic_lr: float = Field(1e-5, gt=0, description="gae critic: learning rate of the critic's optimiser.")
    value_clip: float | None = Field(
        0.2, gt=0, description="gae critic: clip of the value update around the rollout's values; None disables."
    )

    # --- policy loss ----------------------------------------------------------------------------------------
    loss: str = Field(
        "ppo_clip",
        description="Policy loss, a registered name or a user's 'package.module:loss': ppo_clip (token ratio), "
        "gspo (sequence ratio, geometric mean over tokens), decoupled_ppo (clip around a proximal policy, "
        "behaviour importance weight; needs prox log-probs).",
    )
    clip_low: float = Field(0.2, ge=0, description="Lower clip epsilon: ratio floor is 1 - clip_low.")
    clip_high: float = Field(
        0.2, ge=0, description="Upper clip epsilon (DAPO clip-higher sets it above clip_low)."
    )
    dual_clip: float | None = Field(
        None, gt=1, description="Dual-clip constant c > 1: loss of negative-advantage tokens is at most -c * A."
    )
    log_ratio_clamp: float | None = Field(
        20.0,
        gt=0,
        description="Safe ratio (StableReinforce): clamp log(pi/pi_old) to [-x, x] before exp. None disables.",
    )
    tis_cap: float | None = Field(
        None,
        gt=0,
        description="Truncated importance sampling (Yao et al. 2025): cap on the behaviour weight "
        "pi_prox/pi_behaviour that "
        "corrects rollout-vs-training mismatch. Needs prox log-probs. None disables it.",
    )
    aggregation: Aggregation = Field(
        "token_mean",
        description="How token losses become one scalar: token_mean, seq_mean_token_mean, seq_mean_token_sum, "
        "or constant (sum per sequence divided by constant_normalizer, Dr. GRPO). With loss=gspo it defaults "
        "to, and must be, seq_mean_token_mean.",
    )
    constant_normalizer: float = Field(
        1024.0, gt=0, description="Divisor per sequence for aggregation=constant (e.g. the max response length)."
    )

    # --- regularisers ---------------------------------------------------------------------------------------
    kl_coef: float = Field(0.0, ge=0, description="Coefficient beta of the KL to the reference policy.")
    kl_estimator: Literal["k1", "k2", "k3"] = Field(
        "k3",
        description="KL estimator, with r = pi_ref/pi of the sampled token: k1 = -log r (= log pi - log pi_ref), "
        "k2 = (log r)^2 / 2, k3 = r - 1 - log r.",
    )
    kl_in: Literal["loss", "reward"] = Field(
        "loss", description="Apply the KL penalty as a loss term or subtract it from the per-token reward."
    )
    kl_target: float | None = Field(
        None,
        gt=0,
        description="Adaptive KL controller target (per-token KL), scaling kl_coef from its starting value (which "
        "must be above 0); None keeps kl_coef fixed.",
    )
    kl_horizon: int = Field(10000, gt=0, description="Adaptive KL controller horizon in samples.")
    entropy_coef: float = Field(0.0, ge=0, description="Entropy bonus coefficient (loss -= coef * entropy).")
    entropy_target_low: float | None = Field(
        None, ge=0, description="Adaptive entropy controller (AEPO): lower edge of the target entropy band."
    )
    entropy_target_high: float | None = Field(
        None, ge=0, description="Adaptive entropy controller (AEPO): upper edge of the target entropy band."
    )
    entropy_control: Literal["coef", "mask"] = Field(
        "coef",
        description="What the entropy controller adjusts: coef (raise/lower the entropy bonus) or mask (above the "
        "band drop negative-advantage tokens, which push entropy up, until entropy falls below the band).",
    )
    entropy_coef_step: float = Field(1e-3, gt=0, description="Entropy controller's additive step per update.")
    entropy_coef_max: float = Field(0.05, ge=0, description="Upper bound on the controlled entropy coefficient.")

    # --- reward shaping -------------------------------------------------------------------------------------
    overlong_max_len: int | None = Field(
        None, gt=0, description="DAPO soft overlong penalty: max completion length; None disables it."
    )
    overlong_buffer: int = Field(
        512, ge=1, description="DAPO soft overlong penalty: length of the linear-penalty zone before the max."
    )
    overlong_coef: float = Field(1.0, ge=0, description="DAPO soft overlong penalty: penalty at the max length.")
    long2short_coef: float = Field(
        0.0, ge=0, description="Kimi k1.5 long2short length reward weight relative to the group; 0 disables."
    )
    correct_threshold: float = Field(
        0.5, description="A reward above this counts as correct (long2short treats correct answers differently)."
    )
    repetition_coef: float = Field(
        0.0, ge=0, description="n-gram repetition penalty weight (MiroMind-style); 0 disables it."
    )
    repetition_ngram: int = Field(4, ge=1, description="n of the n-grams the repetition penalty counts.")

    @field_validator("advantage")
    @classmethod
    def _known_estimator(cls, spec: str) -> str:
        return validated(resolve_estimator, spec)

    @field_validator("loss")
    @classmethod
    def _known_loss(cls, spec: str) -> str:
        return validated(resolve_loss, spec)

    @model_validator(mode="after")
    def _check_bands(self) -> AlgoConfig:
        low, high = self.entropy_target_low, self.entropy_target_high
        if (low is None) != (high is None):
            raise ValueError("algo.entropy_target_low and algo.entropy_target_high must be set together")
        if self.entropy_control == "mask" and low is None:
            raise ValueError(
                "algo.entropy_control=mask needs a band: set algo.entropy_target_low and algo.entropy_target_high"
            )
        if self.kl_target is not None and self.kl_coef == 0:
            raise ValueError(
                "algo.kl_target adapts algo.kl_coef by multiplying it, so from 0 it stays 0: set algo.kl_coef to "
                "a starting value above 0 (e.g. 0.05)"
            )
        if low is not None and high is not None and low >= high:
            raise ValueError(f"algo.entropy_target_low ({low}) must be below algo.entropy_target_high ({high})")
        estimator, loss = resolve_estimator(self.advantage), resolve_loss(self.loss)
        if "sequence_advantage" in loss.needs and estimator.level != "sequence":
            raise ValueError(
                f"algo.loss={self.loss} needs a sequence-level advantage; it cannot use advantage={self.advantage}"
            )
        return self

    @model_validator(mode="after")
    def _estimator_settings_apply(self) -> AlgoConfig:
        """The keys beyond the fields are the estimator's settings: validated by its ``settings`` model (which
        supplies the defaults); a key it does not have is an unknown key, as in every other section."""
        settings = resolve_estimator(self.advantage).settings
        extra = dict(self.model_extra or {})
        if "positive_weight" in extra:
            raise ValueError(
                "algo.positive_weight is now algo.positive_scale (it scales the positive advantages of any "
                "estimator); the paper's W-REINFORCE (+lambda / -1, no baseline) is algo.advantage=w_reinforce "
                "with algo.w_reinforce_lambda"
            )
        known = set(settings.model_fields) if settings is not None else set()
        unknown = [key for key in extra if key not in known]
        if unknown:
            details = [InitErrorDetails(type="extra_forbidden", loc=(key,), input=extra[key]) for key in unknown]
            raise ValidationError.from_exception_data(type(self).__name__, details)
        self._estimator_settings = settings.model_validate(extra) if settings is not None else None
        return self

    @model_validator(mode="after")
    def _shared_keys_are_read(self) -> AlgoConfig:
        """A shared key only some estimators read (``gamma``, ``gae_lambda``, ``gae_whiten``,
        ``correct_threshold``) set to other than its default must be read by this run's estimator
        (``correct_threshold`` also by long2short), or it would be dropped without a word."""
        estimator = resolve_estimator(self.advantage)
        fields = type(self).model_fields
        ignored = [
            key
            for key in sorted(ESTIMATOR_KEYS - estimator.reads)
            if getattr(self, key) != fields[key].default
            and not (key == "correct_threshold" and self.long2short_coef > 0)
        ]
        if ignored:
            readers = {key: [n for n in ESTIMATORS.names() if key in ESTIMATORS.get(n).reads] for key in ignored}
            raise ValueError(
                "; ".join(
                    f"algo.{key}={getattr(self, key)} is read by algo.advantage in {readers[key]}"
                    f"{' or by algo.long2short_coef' if key == 'correct_threshold' else ''}, not by "
                    f"algo.advantage={self.advantage}, which would ignore it: remove algo.{key} or choose one of "
                    f"them"
                    for key in ignored
                )
            )
        return self

    @property
    def estimator_settings(self) -> Any:
        """The configured estimator's own settings (an instance of its ``settings`` model), None if it has none."""
        return self._estimator_settings

    @model_validator(mode="after")
    def _aggregation_follows_the_loss(self) -> AlgoConfig:
        """A loss may fix the aggregation its objective needs (GSPO: ``(1/G) sum_i`` of a sequence-level term,
        which only seq_mean_token_mean computes; the others weight sequence i by its length). Unset, the
        aggregation follows the loss; set to another, it is an error."""
        required = resolve_loss(self.loss).aggregation
        if required is None or self.aggregation == required:
            return self
        if "aggregation" not in self.model_fields_set:
            self.aggregation = required
            return self
        raise ValueError(
            f"algo.loss={self.loss} averages one term per sequence, (1/G) sum_i, as algo.aggregation={required} "
            f"computes; algo.aggregation={self.aggregation} weights each sequence by its length |o_i|. Remove "
            f"algo.aggregation (the loss then sets it) or set it to {required}."
        )


def shaping_keys(cfg: AlgoConfig) -> list[str]:
    """The reward-shaping settings that are on: each adds a term to every reward before the estimator reads it."""
    keys = ["algo.overlong_max_len"] if cfg.overlong_max_len is not None else []
    keys += ["algo.long2short_coef"] if cfg.long2short_coef > 0 else []
    return keys + (["algo.repetition_coef"] if cfg.repetition_coef > 0 else [])


def estimator_setting_owners(key: str) -> list[str]:
    """The registered estimators whose own settings include ``key`` (an ``algo:`` key beyond the fields)."""
    return [
        name
        for name in ESTIMATORS.names()
        if (settings := ESTIMATORS.get(name).settings) is not None and key in settings.model_fields
    ]


def estimator_setting_keys() -> set[str]:
    """Every key of the ``algo:`` section that some registered estimator reads as its own setting."""
    return {key for name in ESTIMATORS.names() if (m := ESTIMATORS.get(name).settings) for key in m.model_fields}
