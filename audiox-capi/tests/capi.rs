//! The C API called as C would call it: error paths, freeing twice, blocking and job runs on
//! the repository's tiny model.

use std::ffi::{CStr, CString, c_void};
use std::ptr;

use audiox_capi::*;

fn last_error() -> String {
    unsafe { CStr::from_ptr(audiox_last_error()) }
        .to_str()
        .unwrap()
        .to_owned()
}

fn bundle() -> CString {
    let dir = audiox_core_bundle();
    CString::new(dir).unwrap()
}

fn audiox_core_bundle() -> String {
    format!("{}/../fixtures/tiny/bundle", env!("CARGO_MANIFEST_DIR"))
}

fn open() -> AudioxModel {
    let mut model = AudioxModel::default();
    let dir = bundle();
    assert_eq!(
        unsafe { audiox_model_open(dir.as_ptr(), &mut model) },
        AudioxStatus::Ok,
        "{}",
        last_error()
    );
    model
}

#[test]
fn bad_paths_and_arguments_are_errors_with_messages() {
    let mut model = AudioxModel::default();
    let missing = CString::new("/nonexistent/audiox/model").unwrap();
    assert_eq!(
        unsafe { audiox_model_open(missing.as_ptr(), &mut model) },
        AudioxStatus::Io
    );
    assert!(
        last_error().contains("/nonexistent/audiox/model"),
        "{}",
        last_error()
    );
    assert_eq!(model, AudioxModel::default(), "nothing written on failure");
    assert_eq!(
        unsafe { audiox_model_open(ptr::null(), &mut model) },
        AudioxStatus::InvalidArgument
    );
    assert_eq!(
        unsafe { audiox_model_open(missing.as_ptr(), ptr::null_mut()) },
        AudioxStatus::InvalidArgument
    );
    let not_utf8 = [0xffu8, 0xfe, 0];
    assert_eq!(
        unsafe { audiox_model_open(not_utf8.as_ptr().cast(), &mut model) },
        AudioxStatus::InvalidArgument
    );
    // The hub path, offline with an empty cache: an I/O error naming the repository (the
    // download path itself is tested against a local hub server in audiox/tests/hub.rs).
    let home = tempfile::tempdir().unwrap();
    // SAFETY: no other test of this binary reads these variables.
    unsafe {
        std::env::set_var("HF_HOME", home.path());
        std::env::remove_var("HF_HUB_CACHE");
        std::env::set_var("HF_HUB_OFFLINE", "1");
    }
    let repo = CString::new("org/model").unwrap();
    assert_eq!(
        unsafe { audiox_model_open_hub(repo.as_ptr(), &mut model) },
        AudioxStatus::Io
    );
    let message = unsafe { CStr::from_ptr(audiox_last_error()) }
        .to_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("org/model"), "{message}");
    // Invalid handles.
    assert_eq!(audiox_model_sample_rate(AudioxModel { id: 999_999 }), 0);
    assert_eq!(
        audiox_request_set_seed(AudioxRequest::default(), 1),
        AudioxStatus::InvalidHandle
    );
    let name = unsafe { CStr::from_ptr(audiox_status_name(AudioxStatus::Timeout)) };
    assert_eq!(name.to_str().unwrap(), "timeout");
}

#[test]
fn freeing_twice_is_safe_and_reported() {
    let mut request = AudioxRequest::default();
    assert_eq!(
        unsafe { audiox_request_new(ptr::null(), &mut request) },
        AudioxStatus::Ok
    );
    assert_eq!(audiox_request_free(request), AudioxStatus::Ok);
    assert_eq!(audiox_request_free(request), AudioxStatus::InvalidHandle);
    assert!(last_error().contains("already freed"), "{}", last_error());
    // Use after free, and a handle of another kind, are errors too.
    assert_eq!(
        audiox_request_set_steps(request, 4),
        AudioxStatus::InvalidHandle
    );
    let model = open();
    assert_eq!(
        audiox_request_free(AudioxRequest { id: model.id }),
        AudioxStatus::InvalidHandle
    );
    assert_eq!(audiox_model_free(model), AudioxStatus::Ok);
    assert_eq!(audiox_model_free(model), AudioxStatus::InvalidHandle);
}

#[test]
fn bad_requests_are_refused_and_good_ones_run() {
    let model = open();
    let rate = audiox_model_sample_rate(model);
    let max = audiox_model_max_duration(model);
    assert!(rate > 0 && max > 0.0);
    let text = CString::new("a door slams").unwrap();
    let mut request = AudioxRequest::default();
    unsafe { audiox_request_new(text.as_ptr(), &mut request) };
    let mut result = AudioxResult::default();

    // Past one window is long-form generation; past its limit (an hour) the request is refused.
    audiox_request_set_duration(request, 1.0e7);
    assert_eq!(
        unsafe { audiox_generate(model, request, &mut result) },
        AudioxStatus::InvalidRequest
    );
    assert!(last_error().contains("duration"), "{}", last_error());
    audiox_request_set_duration(request, max / 2.0);
    let missing = CString::new("/nonexistent/picture.png").unwrap();
    unsafe { audiox_request_set_image(request, missing.as_ptr()) };
    assert_ne!(
        unsafe { audiox_generate(model, request, &mut result) },
        AudioxStatus::Ok
    );
    // A fresh request: seed, variations, output options.
    audiox_request_free(request);
    unsafe { audiox_request_new(text.as_ptr(), &mut request) };
    audiox_request_set_seed(request, 3);
    audiox_request_set_variations(request, 2);
    audiox_request_set_duration(request, max / 2.0);
    audiox_request_set_sample_rate(request, 22_050);
    audiox_request_set_mono(request, 1);
    assert_eq!(
        unsafe { audiox_generate(model, request, &mut result) },
        AudioxStatus::Ok,
        "{}",
        last_error()
    );
    assert_eq!(audiox_result_count(result), 2);
    let (mut samples, mut frames, mut channels, mut out_rate) =
        (ptr::null::<c_void>(), 0usize, 0u32, 0u32);
    assert_eq!(
        unsafe {
            audiox_result_audio(
                result,
                1,
                AudioxSampleFormat::Pcm16,
                &mut samples,
                &mut frames,
                &mut channels,
                &mut out_rate,
            )
        },
        AudioxStatus::Ok
    );
    assert_eq!((channels, out_rate), (1, 22_050));
    assert_eq!(frames, (max / 2.0 * 22_050.0).round() as usize);
    let pcm = unsafe { std::slice::from_raw_parts(samples.cast::<i16>(), frames) };
    assert!(pcm.iter().any(|&s| s != 0));
    assert_eq!(
        unsafe {
            audiox_result_audio(
                result,
                2,
                AudioxSampleFormat::F32,
                &mut samples,
                ptr::null_mut(),
                ptr::null_mut(),
                ptr::null_mut(),
            )
        },
        AudioxStatus::InvalidArgument
    );
    let mut seed = 0;
    unsafe { audiox_result_seed(result, &mut seed) };
    assert_eq!(seed, 3);
    let dir = tempfile::tempdir().unwrap();
    let wav = CString::new(dir.path().join("a.wav").to_str().unwrap()).unwrap();
    assert_eq!(
        unsafe { audiox_result_write_wav(result, 0, wav.as_ptr(), AudioxSampleFormat::Pcm16) },
        AudioxStatus::Ok
    );
    let written = audiox::Audio::read(dir.path().join("a.wav")).unwrap();
    assert_eq!(written.sample_rate(), 22_050);
    assert_eq!(written.num_frames(), frames);

    // The same request as a job gives the same samples.
    let mut queue = AudioxQueue::default();
    assert_eq!(
        unsafe { audiox_queue_new(model, 1, &mut queue) },
        AudioxStatus::Ok
    );
    let mut job = AudioxJob::default();
    assert_eq!(
        unsafe { audiox_queue_submit(queue, request, &mut job) },
        AudioxStatus::Ok
    );
    assert_eq!(audiox_job_wait(job, -1), AudioxStatus::Ok);
    let mut progress = AudioxProgress {
        stage: AudioxStage::Queued,
        step: 0,
        total_steps: 0,
        fraction: 0.0,
    };
    unsafe { audiox_job_progress(job, &mut progress) };
    assert_eq!(progress.stage, AudioxStage::Done);
    assert_eq!(progress.fraction, 1.0);
    let mut from_job = AudioxResult::default();
    assert_eq!(
        unsafe { audiox_job_take_result(job, &mut from_job) },
        AudioxStatus::Ok
    );
    assert_eq!(
        unsafe { audiox_job_take_result(job, &mut from_job) },
        AudioxStatus::AlreadyTaken
    );
    let read = |r: AudioxResult| {
        let (mut p, mut n) = (ptr::null::<c_void>(), 0usize);
        unsafe {
            audiox_result_audio(
                r,
                0,
                AudioxSampleFormat::F32,
                &mut p,
                &mut n,
                ptr::null_mut(),
                ptr::null_mut(),
            );
            std::slice::from_raw_parts(p.cast::<f32>(), n).to_vec()
        }
    };
    assert_eq!(read(result), read(from_job));

    // A cancelled job has no result.
    let mut cancelled = AudioxJob::default();
    unsafe { audiox_queue_submit(queue, request, &mut cancelled) };
    audiox_job_cancel(cancelled);
    audiox_job_wait(cancelled, -1);
    let mut none = AudioxResult::default();
    assert_eq!(
        unsafe { audiox_job_take_result(cancelled, &mut none) },
        AudioxStatus::Cancelled
    );
    assert_eq!(none, AudioxResult::default());

    for status in [
        audiox_job_free(job),
        audiox_job_free(cancelled),
        audiox_queue_free(queue),
        audiox_result_free(result),
        audiox_result_free(from_job),
        audiox_request_free(request),
        audiox_model_free(model),
    ] {
        assert_eq!(status, AudioxStatus::Ok);
    }
    assert_eq!(audiox_job_wait(job, 0), AudioxStatus::InvalidHandle);
}

#[test]
fn a_model_opens_in_each_weight_precision_and_unknown_names_are_refused() {
    let dir = bundle();
    for name in ["f32", "bf16", "int8"] {
        let precision = CString::new(name).unwrap();
        let mut model = AudioxModel::default();
        assert_eq!(
            unsafe {
                audiox_model_open_with_precision(dir.as_ptr(), precision.as_ptr(), &mut model)
            },
            AudioxStatus::Ok,
            "{name}: {}",
            last_error()
        );
        assert_eq!(audiox_model_free(model), AudioxStatus::Ok);
    }
    let mut model = AudioxModel::default();
    let unknown = CString::new("f8").unwrap();
    assert_eq!(
        unsafe { audiox_model_open_with_precision(dir.as_ptr(), unknown.as_ptr(), &mut model) },
        AudioxStatus::InvalidRequest
    );
    assert!(last_error().contains("f8"), "{}", last_error());
    assert_eq!(
        unsafe { audiox_model_open_with_precision(dir.as_ptr(), ptr::null(), &mut model) },
        AudioxStatus::InvalidArgument
    );
    assert_eq!(model, AudioxModel::default(), "nothing written on failure");
}
