/*
 * The application side of an MCU updated by the edge-ota serial translator. It deliberately does NOT call
 * boot_write_img_confirmed(): the gateway confirms over SMP once its health check has passed, and MCUboot
 * reverts any image that was not confirmed before the next reset. The periodic log line shares the UART
 * with SMP on purpose; the gateway's client skips it.
 */
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>
#include <zephyr/dfu/mcuboot.h>

LOG_MODULE_REGISTER(app, LOG_LEVEL_INF);

int main(void)
{
    LOG_INF("edge-ota SMP app up, image %s", boot_is_img_confirmed() ? "confirmed" : "on trial");
    for (;;) {
        k_sleep(K_SECONDS(10));
        LOG_INF("alive");
    }
    return 0;
}
