/* cli_mel.c — `graph mel AUDIO --out mel.npy`: Whisper's log-Mel
 * spectrogram of an audio file, computed as graph ops on the device (or the
 * interpreter), written as .npy for inspection. */
#include "frontend/audio.h"
#include "frontend/cli.h"
#include "frontend/npy.h"
#include "tg_whisper.h"

#include <stdlib.h>
#include <string.h>

const char cli_mel_help[] =
    "usage: graph mel AUDIO --out MEL.npy [--n-mels 80|128] [--interp]\n"
    "\n"
    "Reads AUDIO (any format libsndfile reads: WAV, FLAC, Ogg, MP3, ...), mixes\n"
    "it to mono, resamples it to 16 kHz (libsoxr), cuts it into 30-second\n"
    "windows (the last padded with zeros) and writes Whisper's log-Mel\n"
    "spectrogram of each: f32 [windows, n_mels, 3000] (docs/whisper.md).\n"
    "  --out FILE      the .npy file to write (required)\n"
    "  --n-mels N      80 (default) or 128 (large-v3)\n"
    "  --interp        compute on the reference interpreter instead of the device\n";

int cli_mel(int argc, char **argv) {
    const char *command = "mel", *audio_path = NULL, *out_path = NULL, *mels_arg = NULL;
    bool interp = false;
    for (int i = 1; i < argc;) {
        const char *value = NULL;
        int took = cli_take_value(command, argc, argv, &i, "--out", &value);
        if (took < 0) return CLI_USAGE;
        if (took) {
            out_path = value;
            continue;
        }
        took = cli_take_value(command, argc, argv, &i, "--n-mels", &value);
        if (took < 0) return CLI_USAGE;
        if (took) {
            mels_arg = value;
            continue;
        }
        if (strcmp(argv[i], "--interp") == 0) {
            interp = true;
        } else if (argv[i][0] == '-' && argv[i][1]) {
            return cli_usage_error(command, "unknown option '%s'", argv[i]);
        } else if (audio_path) {
            return cli_usage_error(command, "one AUDIO file, got '%s' and '%s'", audio_path,
                                   argv[i]);
        } else {
            audio_path = argv[i];
        }
        i++;
    }
    if (!audio_path) return cli_usage_error(command, "missing AUDIO");
    if (!out_path) return cli_usage_error(command, "missing --out FILE");
    int n_mels = 80;
    if (mels_arg) {
        if (strcmp(mels_arg, "80") == 0)
            n_mels = 80;
        else if (strcmp(mels_arg, "128") == 0)
            n_mels = 128;
        else
            return cli_usage_error(command, "--n-mels is 80 or 128, got '%s'", mels_arg);
    }

    float *samples = NULL;
    int64_t n = 0;
    if (tg_audio_load(audio_path, TG_WHISPER_SAMPLE_RATE, &samples, &n) != TG_OK) {
        cli_error("%s", tg_last_error());
        return CLI_FAIL;
    }
    int64_t windows = (n + TG_WHISPER_N_SAMPLES - 1) / TG_WHISPER_N_SAMPLES;
    tg_array audio = {0}, mel = {0};
    int64_t ashape[2] = {windows, TG_WHISPER_N_SAMPLES};
    int rc = CLI_FAIL;
    tg_graph *g = NULL;
    tg_device *dev = NULL;
    tg_executable *exe = NULL;
    if (tg_array_alloc(&audio, TG_F32, 2, ashape) != TG_OK) {
        cli_error("%s: %s", audio_path, tg_last_error());
        goto done;
    }
    for (int64_t w = 0; w < windows; w++)
        tg_whisper_pad_or_trim(samples + w * TG_WHISPER_N_SAMPLES, n - w * TG_WHISPER_N_SAMPLES,
                               (float *)audio.data + w * TG_WHISPER_N_SAMPLES,
                               TG_WHISPER_N_SAMPLES);

    g = tg_graph_new();
    tg_tensor x = tg_placeholder(g, "audio", TG_F32, 2, ashape);
    tg_tensor y = tg_whisper_log_mel(g, x, n_mels);
    if (tg_graph_status(g) != TG_OK) {
        cli_error("log-Mel graph: %s", tg_graph_error(g));
        goto done;
    }
    tg_feed feed = {x, &audio};
    tg_status st;
    if (interp) {
        st = tg_interpret(g, NULL, 1, &feed, 1, &y, &mel, 0, NULL, 0);
    } else {
        st = tg_device_open(-1, &dev);
        if (st == TG_OK) st = tg_compile(dev, g, NULL, 1, &y, 0, NULL, NULL, &exe);
        if (st == TG_OK) st = tg_run(exe, 1, &feed, &mel);
    }
    if (st != TG_OK) {
        cli_error("%s: log-Mel: %s", audio_path, tg_last_error());
        goto done;
    }
    if (tg_npy_write(out_path, &mel) != TG_OK) {
        cli_error("%s", tg_last_error());
        goto done;
    }
    fprintf(stderr, "graph mel: %s: %.2f s of audio, %lld window(s) -> %s f32[%lld,%d,%d]\n",
            audio_path, (double)n / TG_WHISPER_SAMPLE_RATE, (long long)windows, out_path,
            (long long)windows, n_mels, TG_WHISPER_N_FRAMES);
    rc = CLI_OK;
done:
    tg_executable_free(exe);
    tg_device_free(dev);
    tg_graph_free(g);
    tg_array_free(&audio);
    tg_array_free(&mel);
    free(samples);
    return rc;
}
