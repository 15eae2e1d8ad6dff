"""Dashboard users: create, find, list, delete, check and change a password (werkzeug's scrypt hashes).

werkzeug's `generate_password_hash` uses scrypt (memory-hard, from the standard library's
hashlib) with a random salt: no new dependency, and the hash string names its own parameters,
so stronger ones later still verify old hashes.
"""

from __future__ import annotations

import functools
import re
import secrets

from peewee import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from gateway.db import database
from gateway.errors import Conflict, InvalidRequest, NotFound
from gateway.tables import Account, DashboardSession, User

ROLES = ("member", "admin")
MIN_PASSWORD_LENGTH = 8
MAX_PASSWORD_LENGTH = 1024
EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s]+\.[^@\s]+")


def normalize_email(email: str) -> str:
    """The stored form of an email (trimmed, lower-case), or 400 when it is not one."""
    email = email.strip().lower()
    if len(email) > 254 or not EMAIL.fullmatch(email):
        raise InvalidRequest("Enter a valid email address.", param="email")
    return email


def check_password_rules(password: str) -> None:
    """400 unless the password is 8 to 1024 characters long."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidRequest(f"A password has {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters.",
                             param="password")


def create_user(email: str, password: str, account: Account | None = None, role: str = "member") -> User:
    """A new user of `account` (a new account named after the email when none is given); 409 if taken."""
    email = normalize_email(email)
    check_password_rules(password)
    if role not in ROLES:
        raise InvalidRequest(f"A role is one of {', '.join(ROLES)}.", param="role")
    password_hash = generate_password_hash(password)
    try:
        with database.atomic():
            account = account or Account.create(name=email)
            return User.create(email=email, password_hash=password_hash, account=account, role=role)
    except IntegrityError:
        raise Conflict(f"A user with email {email} already exists.", param="email") from None


def authenticate(email: str, password: str) -> User | None:
    """The user whose email and password these are, else None (in about the same time either way)."""
    user = User.get_or_none(User.email == email.strip().lower())
    matches = check_password_hash(user.password_hash if user else unknown_user_hash(), password)
    return user if user is not None and matches else None


@functools.cache
def unknown_user_hash() -> str:
    """A hash checked when the email is unknown, so a wrong email costs as long as a wrong password."""
    return generate_password_hash(secrets.token_urlsafe(16))


def set_password(user: User, password: str) -> None:
    """Change a user's password and end every session they have (each copy of each cookie)."""
    check_password_rules(password)
    with database.atomic():
        User.update(password_hash=generate_password_hash(password)).where(User.id == user.id).execute()
        DashboardSession.delete().where(DashboardSession.user == user.id).execute()


def find_user(reference: str | int) -> User:
    """A user by id or email, or 404."""
    reference = str(reference).strip()
    user = (User.get_or_none(User.id == int(reference)) if reference.isdigit()
            else User.get_or_none(User.email == reference.lower()))
    if user is None:
        raise NotFound(f"No user {reference}.", param="user")
    return user


def list_users(account_id: int | None = None) -> list[User]:
    """Every user (of one account, when given), oldest first."""
    query = User.select(User, Account).join(Account).order_by(User.id)
    if account_id is not None:
        query = query.where(User.account == account_id)
    return list(query)


def delete_user(reference: str | int) -> User:
    """Delete a user (their account and keys stay); 404 if there is none."""
    user = find_user(reference)
    user.delete_instance()
    return user


def describe_user(user: User) -> dict:
    """A user as the CLI prints it (never the hash)."""
    return {"id": user.id, "email": user.email, "account_id": user.account_id, "role": user.role,
            "created_at": user.created_at.isoformat(timespec="seconds") + "Z"}
