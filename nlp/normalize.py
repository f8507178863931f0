"""Text normalisation shared by training and matching, so both see the same text.

Full-width forms become ASCII (NFKC), case is folded, punctuation and runs of spaces collapse
to one space, and common traditional Chinese characters become simplified ones. The table is
deliberately small: the characters customer questions use most (orders, shipping, refunds,
accounts, hours), which is where a visitor typing traditional Chinese meets a bot trained on
simplified. A full converter (OpenCC) would be a dependency with a dictionary of its own.
"""

from __future__ import annotations

import re
import unicodedata

# Pairs of simplified and traditional characters, one pair per word.
_PAIRS_TEXT = (
    "们們 这這 订訂 单單 号號 货貨 运運 费費 钱錢 换換 账帳 码碼 问問 题題 么麼 时時 间間 开開 "
    "门門 关關 务務 电電 话話 邮郵 达達 买買 卖賣 价價 吗嗎 没沒 还還 发發 从從 会會 个個 来來 "
    "为為 请請 谢謝 处處 帮幫 说說 让讓 录錄 注註 户戶 与與 书書 东東 车車 长長 张張 几幾 点點 "
    "钟鐘 营營 业業 周週 样樣 坏壞 实實 际際 国國 内內 网網 页頁 线線 设設 计計 据據 权權 删刪 "
    "销銷 联聯 系係 对對 应應 该該 给給 过過 进進 选選 择擇 输輸 认認 证證 验驗 错錯 误誤 额額 "
    "优優 报報 税稅 余餘 转轉 银銀 红紅 绿綠 态態 罚罰 资資 产產 变變 种種 类類 满滿 级級 动動 "
    "图圖 师師 条條 许許 头頭 马馬 义義 乐樂 难難 传傳 双雙 边邊 后後 里裡 台臺 湾灣 递遞 迟遲 "
    "饭飯 码碼 现現 尔爾 准準 备備 寻尋 询詢 复復 补補 偿償 损損 质質 汇匯 币幣 卡卡 扣扣 "
)
_PAIRS = {pair[1]: pair[0] for pair in _PAIRS_TEXT.split() if pair[0] != pair[1]}
_TO_SIMPLIFIED = str.maketrans(_PAIRS)
# Anything that is neither a letter, a digit, a mark nor a CJK ideograph separates words.
_SEPARATORS = re.compile(r"[^\w]+|_+")
# Order numbers, phones and amounts say nothing about the intent: all long numbers look alike.
_LONG_NUMBER = re.compile(r"\d{4,}")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def normalize(text: str) -> str:
    """The comparable form of `text`: width, case, punctuation, script and numbers folded."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_TO_SIMPLIFIED)
    text = _LONG_NUMBER.sub("0000", text)
    return _SEPARATORS.sub(" ", text).strip()


def has_cjk(text: str) -> bool:
    return _CJK.search(text) is not None


def language_of(text: str, default: str = "en") -> str:
    """'zh' when the text holds Chinese characters, else `default`; good enough to pick a reply."""
    return "zh" if has_cjk(text) else default
