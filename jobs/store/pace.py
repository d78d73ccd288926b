"""The paces jobs found, per (provider, model): read where a job starts, written as it ends."""

from __future__ import annotations

from sqlmodel import Session, select

from jobs.models import LearnedPace, utcnow


def learned_paces(session: Session, provider: str) -> dict[str, float]:
    """Model → requests/s a job last found on this provider."""
    rows = session.exec(select(LearnedPace).where(LearnedPace.provider == provider))
    return {row.model: row.requests_per_s for row in rows}


def save_pace(session: Session, provider: str, model: str, requests_per_s: float) -> None:
    """Remember the pace found for (provider, model), replacing the one before."""
    row = session.get(LearnedPace, (provider, model))
    if row is None:
        row = LearnedPace(provider=provider, model=model, requests_per_s=requests_per_s)
    else:
        row.requests_per_s, row.updated_at = requests_per_s, utcnow()
    session.add(row)
