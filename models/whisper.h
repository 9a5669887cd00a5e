/* whisper.h — what models/whisper.c, whisper_decode.c and mel.c share.
 * The public API is the "Model graphs" section of include/tg_whisper.h. */
#ifndef TG_MODELS_WHISPER_H
#define TG_MODELS_WHISPER_H

#include "tg_whisper.h"

/** Longest weight name (with the NUL). */
#define TG_WHISPER_NAME_MAX 96

/** Checks the hyperparameters the graphs depend on (positive sizes, heads
 *  dividing d_model, at most TG_WHISPER_MAX_LAYERS decoder layers). */
tg_status tg_whisper_check_config(const tg_whisper_config *cfg);

#endif /* TG_MODELS_WHISPER_H */
