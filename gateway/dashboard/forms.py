"""The dashboard's forms (Flask-WTF: each carries its CSRF token); bounds shared with the admin API."""

from __future__ import annotations

from flask_wtf import FlaskForm
from wtforms import DecimalField, IntegerField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, EqualTo, Length, NumberRange, Optional, StopValidation

from gateway.accounting.admin_limits import MAX_CREDITS, MAX_DAYS, MAX_ID, MAX_RATE, MAX_STREAMS, TIERS
from gateway.dashboard.users import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, ROLES


def rate_field(label: str) -> IntegerField:
    return IntegerField(label, validators=[Optional(), NumberRange(1, MAX_RATE)])


def streams_field() -> IntegerField:
    return IntegerField("Open streams (per worker)", validators=[Optional(), NumberRange(1, MAX_STREAMS)])


def finite(form: FlaskForm, field: DecimalField) -> None:
    """Refuse NaN and the infinities, which Decimal parses (and NaN cannot even be compared with a bound)."""
    if field.data is not None and not field.data.is_finite():
        raise StopValidation("Enter a number.")


def credits_field(label: str, minimum: float = 0) -> DecimalField:
    return DecimalField(label, places=None, validators=[Optional(), finite, NumberRange(minimum, MAX_CREDITS)])


class SignInForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])


class SignUpForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[
        DataRequired(), Length(MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH)])
    confirm = PasswordField("Repeat the password", validators=[EqualTo("password", "The passwords differ.")])


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=MAX_PASSWORD_LENGTH)])
    password = PasswordField("New password", validators=[
        DataRequired(), Length(MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH)])
    confirm = PasswordField("Repeat the new password", validators=[EqualTo("password", "The passwords differ.")])


class ActionForm(FlaskForm):
    """A button that only needs its CSRF token (revoke, delete, sign out)."""


class KeyForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    rpm = rate_field("Requests per minute")
    tpm = rate_field("Tokens per minute")
    spend_limit = credits_field("Spend limit (credits)")
    max_streams = streams_field()


class LimitsForm(FlaskForm):
    """A key's limits; an empty field clears that limit (the gateway's default applies)."""

    rpm = rate_field("Requests per minute")
    tpm = rate_field("Tokens per minute")
    spend_limit = credits_field("Spend limit (credits)")
    max_streams = streams_field()


class AccountForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired(), Length(max=200)])
    tier = SelectField("Tier", choices=TIERS, default="free")
    scope = StringField("Profile scope (optional)", validators=[Optional(), Length(max=200)])


class TierForm(FlaskForm):
    """An account's tier and its keys' stream limit (empty: none of its own)."""

    tier = SelectField("Tier", choices=TIERS)
    max_streams = streams_field()


class GrantForm(FlaskForm):
    amount = DecimalField("Credits", places=None, validators=[DataRequired(), finite, NumberRange(0, MAX_CREDITS)])
    expires_in_days = DecimalField("Expires in days (optional)", places=None,
                                   validators=[Optional(), finite, NumberRange(0, MAX_DAYS)])
    source = StringField("Source", default="grant", validators=[DataRequired(), Length(max=32)])


PERIOD_CHOICES = ["lifetime", "daily", "weekly", "monthly"]  # periods in UTC, weeks from Monday; lifetime: no reset


def period_of(choice: str) -> str | None:
    """A period field's choice as a budget's period (None: lifetime)."""
    return None if choice == "lifetime" else choice


class BudgetForm(FlaskForm):
    """A budget on an account page: the account's (no key, model or tag), a key's for one model, or a tag's."""

    amount = DecimalField("Credits per period", places=None,
                          validators=[DataRequired(), finite, NumberRange(0, MAX_CREDITS)])
    period = SelectField("Period (UTC)", choices=PERIOD_CHOICES, default="lifetime")
    key_id = IntegerField("Key id (with a model)", validators=[Optional(), NumberRange(1, MAX_ID)])
    model = StringField("Model (optional)", validators=[Optional(), Length(max=200)])
    tag = StringField("Tag (optional)", validators=[Optional(), Length(max=64)])


class LimitResetForm(FlaskForm):
    """When a key's spend limit starts again from zero."""

    key_id = IntegerField("Key id", validators=[DataRequired(), NumberRange(1, MAX_ID)])
    limit_reset = SelectField("Spend limit period (UTC)", choices=PERIOD_CHOICES, default="lifetime")


class GuardrailsForm(FlaskForm):
    """An account's guardrails, or one of its keys': names of the config's [guardrails.NAME] tables."""

    key_id = IntegerField("Key id (empty: the account's)", validators=[Optional(), NumberRange(1, MAX_ID)])
    guardrails = StringField("Guardrails (comma-separated; empty: none)", validators=[Optional(), Length(max=2000)])


def names_of(field: StringField) -> list[str]:
    """A comma-separated names field as a list (empty: none)."""
    return [name.strip() for name in (field.data or "").split(",") if name.strip()]


class UserForm(FlaskForm):
    email = StringField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[
        DataRequired(), Length(MIN_PASSWORD_LENGTH, MAX_PASSWORD_LENGTH)])
    account_id = IntegerField("Account id (empty: a new account)", validators=[Optional(), NumberRange(1, MAX_ID)])
    role = SelectField("Role", choices=list(ROLES), default="member")
