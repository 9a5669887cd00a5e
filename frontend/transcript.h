/* transcript.h — writing Whisper transcripts (frontend/lib_transcript.c):
 * plain text, JSON (segments with start, end, text and token ids), SubRip
 * (.srt) and WebVTT (.vtt). Segment text is the tokenizer's decoding of the
 * segment's text tokens (ids below <|endoftext|>; timestamps and other
 * special tokens are left out). */
#ifndef TG_FRONTEND_TRANSCRIPT_H
#define TG_FRONTEND_TRANSCRIPT_H

#include "tg_whisper.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tg_transcript_format {
    TG_TRANSCRIPT_TXT,
    TG_TRANSCRIPT_JSON,
    TG_TRANSCRIPT_SRT,
    TG_TRANSCRIPT_VTT,
} tg_transcript_format;

/** "txt", "json", "srt", "vtt" -> the format; false if unknown. */
bool tg_transcript_format_from_name(const char *name, tg_transcript_format *out);
/** The file extension of a format, without the dot ("srt"). */
const char *tg_transcript_format_name(tg_transcript_format f);

/** Seconds as HH:MM:SS<sep>mmm (SubRip: ',', WebVTT: '.'), rounded to the
 *  millisecond; negative times are 0. buf needs 16 bytes or more. */
void tg_transcript_timestamp(double seconds, char sep, char *buf, size_t size);

/** The text of one segment (malloc'ed, NUL-terminated): its text tokens
 *  decoded, leading and trailing spaces removed; without a tokenizer (tok
 *  NULL) their ids separated by spaces. */
tg_status tg_transcript_segment_text(const tg_whisper_segment *s, const tg_tokenizer *tok,
                                     int32_t eot, char **text);

/** Renders a transcript in a format (malloc'ed, NUL-terminated text).
 *  `source` names the audio file in the JSON output (may be NULL). */
tg_status tg_transcript_render(const tg_whisper_transcript *t, const tg_tokenizer *tok,
                               const tg_whisper_config *cfg, const char *source,
                               tg_transcript_format f, char **text);

#ifdef __cplusplus
}
#endif
#endif /* TG_FRONTEND_TRANSCRIPT_H */
