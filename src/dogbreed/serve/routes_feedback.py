"""Route: `POST /v1/feedback`, a user confirms or corrects a breed; the photo is stored for retraining."""

from __future__ import annotations

import hashlib
from typing import Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, UploadFile
from starlette.concurrency import run_in_threadpool

from ..transforms import full_size
from .feedback import (
    FeedbackQuotaExceeded,
    FeedbackStorageError,
    breed_not_found,
    find_breed,
    parse_box,
    storable,
)
from .schemas import FeedbackResponse, breed_schema, errors
from .service import (
    NON_EMPTY_FILE,
    ONE_PHOTO_FIELDS,
    Service,
    form_only,
    log,
    one_of_each,
    same_origin,
    service,
)

# Four numbers (the predict answer's integers, or any decimals), or nothing. Whether they lie inside the photo only
# the photo can say: such a box is a 422 naming the photo's size.
BOX_PATTERN = r"^(\s*\d+(\.\d+)?\s*(,\s*\d+(\.\d+)?\s*){3})?$"


def router(breed_values: list[str]) -> APIRouter:
    """The route of this concern; ``breed_values`` go into the request schema."""
    r = APIRouter()

    @r.post("/v1/feedback", dependencies=[Depends(same_origin), Depends(one_of_each),
                                               Depends(form_only(*ONE_PHOTO_FIELDS))],
            summary="Confirm or correct a prediction (stores the photo for retraining)",
              response_model=FeedbackResponse, responses=errors(400, 403, 408, 413, 415, 422, 429, 500, 503, 507))
    async def feedback(
        file: UploadFile = File(..., description="The photo the prediction was for.",
                                json_schema_extra=NON_EMPTY_FILE),
        breed: str = Form(..., min_length=1, max_length=200, json_schema_extra=breed_schema(breed_values),
                          description="The right breed: its name or wnid, as in GET /v1/breeds (any spelling of "
                                      "the name is accepted)."),
        predicted: str = Form("", max_length=200, description="What the model said (top breed or verdict)."),
        box: str = Form("", max_length=100, json_schema_extra={"pattern": BOX_PATTERN, "format": "dog-box"},
                        description="The dog this is about, when the photo shows several: its "
                        "`box` from the predict answer's `dogs`, as x0,y0,x1,y1 in the photo's pixels. Stored with "
                        "the row; `dogbreed feedback export` then writes that dog's crop instead of the whole photo."),
        svc: Service = Depends(service),
    ) -> dict[str, Any]:
        ((name, f),) = svc.check_uploads([file])
        right = find_breed(svc.classes, breed)
        if right is None:
            raise HTTPException(422, f"{breed_not_found(svc.classes, breed)}; see GET /v1/breeds")
        await svc.check_pixels([(name, f)])
        img = await svc.decode(name, f)  # only readable photos go into the dataset
        try:
            dog_box = parse_box(box, full_size(img)) if box.strip() else None
        except ValueError as e:
            raise HTTPException(422, f"{name}: {e}") from None
        data = await run_in_threadpool(svc.read, f, name)
        sha = hashlib.sha256(data).hexdigest()
        stored, fmt = await run_in_threadpool(storable, data)
        try:
            rec = await run_in_threadpool(svc.store.add, stored, fmt, sha, predicted.strip(), right, dog_box)
        except FeedbackQuotaExceeded as e:
            if e.daily:
                raise HTTPException(429, str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
            raise HTTPException(507, str(e)) from None
        except FeedbackStorageError as e:
            log.error("feedback not stored: %s", e)  # once, here; the client gets a sentence without paths
            if e.full:
                raise HTTPException(507, "feedback storage is full (no space left on the server's disk); nothing "
                                    "was saved") from None
            raise HTTPException(503, "feedback cannot be stored right now; nothing was saved",
                                headers={"Retry-After": "60"}) from None
        return {"id": rec.id, "sha256": sha, "predicted": rec.predicted, "breed": {"wnid": right.wnid,
                "name": right.name}, "created_at": rec.created_at, "box": rec.box}

    return r

