/*
 * Generates a sound effect through the audiox C API and writes it as a WAV file.
 *
 *   cargo build --release -p audiox-capi
 *   cc -O2 -Iaudiox-capi/include examples/c/generate.c -Ltarget/release -laudiox_capi \
 *      -Wl,-rpath,"$PWD/target/release" -o target/generate_c
 *   target/generate_c out.wav "a wooden door creaks open" [checkpoint-dir]
 *
 * Without a checkpoint folder it runs the small random-weight model shipped in the
 * repository. It runs the request as an asynchronous job, printing its progress, and writes
 * 16-bit PCM at 48 kHz, mono, normalised to -16 LUFS, with a 0.2 s fade-out.
 */
#include <stdio.h>
#include <stdlib.h>

#include "audiox.h"

/* Prints the failed call, its status and the thread's last error message; returns 1. */
static int fail(const char *what, AudioxStatus status) {
    fprintf(stderr, "%s: %s: %s\n", what, audiox_status_name(status), audiox_last_error());
    return 1;
}

int main(int argc, char **argv) {
    const char *out = argc > 1 ? argv[1] : "audiox_c.wav";
    const char *prompt = argc > 2 ? argv[2] : "a wooden door creaks open, then slams shut";
    const char *dir = argc > 3 ? argv[3] : NULL;

    AudioxModel model = {0};
    AudioxStatus s = dir ? audiox_model_open(dir, &model) : audiox_model_open_default(&model);
    if (s != AUDIOX_STATUS_OK) return fail("open model", s);
    printf("model: %u Hz, at most %.1f s\n", audiox_model_sample_rate(model),
           audiox_model_max_duration(model));

    AudioxRequest request = {0};
    if ((s = audiox_request_new(prompt, &request)) != AUDIOX_STATUS_OK) return fail("request", s);
    audiox_request_set_seed(request, 7);
    audiox_request_set_duration(request, audiox_model_max_duration(model) / 2.0);
    audiox_request_set_sample_rate(request, 48000);
    audiox_request_set_mono(request, 1);
    audiox_request_set_loudness(request, -16.0);
    audiox_request_set_fade_out(request, 0.2);

    AudioxQueue queue = {0};
    if ((s = audiox_queue_new(model, 1, &queue)) != AUDIOX_STATUS_OK) return fail("queue", s);
    AudioxJob job = {0};
    if ((s = audiox_queue_submit(queue, request, &job)) != AUDIOX_STATUS_OK) return fail("submit", s);
    while ((s = audiox_job_wait(job, 50)) == AUDIOX_STATUS_TIMEOUT) {
        AudioxProgress p;
        audiox_job_progress(job, &p);
        printf("  stage %d, step %u/%u, %3.0f %%\n", (int)p.stage, p.step, p.total_steps,
               p.fraction * 100.0f);
    }
    if (s != AUDIOX_STATUS_OK) return fail("wait", s);

    AudioxResult result = {0};
    if ((s = audiox_job_take_result(job, &result)) != AUDIOX_STATUS_OK) return fail("result", s);
    const void *samples = NULL;
    size_t frames = 0;
    uint32_t channels = 0, rate = 0;
    s = audiox_result_audio(result, 0, AUDIOX_SAMPLE_FORMAT_PCM16, &samples, &frames, &channels,
                            &rate);
    if (s != AUDIOX_STATUS_OK) return fail("read samples", s);
    const int16_t *pcm = (const int16_t *)samples;
    int peak = 0;
    for (size_t i = 0; i < frames * channels; i++) {
        int v = abs((int)pcm[i]);
        if (v > peak) peak = v;
    }
    printf("%zu frames, %u channel(s), %u Hz, peak %d\n", frames, channels, rate, peak);
    if ((s = audiox_result_write_wav(result, 0, out, AUDIOX_SAMPLE_FORMAT_PCM16)) != AUDIOX_STATUS_OK)
        return fail("write", s);
    printf("wrote %s\n", out);

    /* Everything is freed; a second free would return AUDIOX_STATUS_INVALID_HANDLE. */
    audiox_result_free(result);
    audiox_job_free(job);
    audiox_queue_free(queue);
    audiox_request_free(request);
    audiox_model_free(model);
    if (audiox_model_free(model) != AUDIOX_STATUS_INVALID_HANDLE) {
        fprintf(stderr, "double free was not detected\n");
        return 1;
    }
    return 0;
}
